// fork() that keeps a Node.js process running in the child, and the child-side fix-ups.
//
// What a plain fork() of Node 20 gets wrong, and what this file does about each (facts 1-5 of
// DESIGN.md; each was seen to fail without its fix):
//   1. V8 marks its heap MADV_DONTFORK: the child would have no JS heap. -> MakeHeapInheritable.
//   2. V8's platform workers do not survive fork(), but the platform task queue's mutex and
//      condition variables still count them: the child's first post to that queue can block
//      forever. -> the parent locates the queue (LocatePlatformQueue); the child re-initialises
//      it before any JS runs (RepairPlatformQueue).
//   4. Node's exit path joins threads that do not exist in the child. -> an exit handler that
//      flushes stdio and _exit()s.
//   5. The event loop must be re-created (uv_loop_fork); signals are blocked around fork() so
//      that no handler runs in the child while it still shares the parent's signal pipe.
// Then, for a Process child only, ChildDetach() quiets everything the child inherited and
// unwinds the parent's JavaScript stack so that the child runs only its target (DESIGN.md,
// "What a forked child inherits").
//
// Where the time of a trivial Process start+join goes (Node 20, 50 MB parent, this 2-core VM;
// medians of interleaved runs, clock_gettime marks + perf page-fault tracing):
//   parent before fork 50 µs | fork() 450-550 µs | child, native fix-ups 300 µs | child JS
//   (afterForkInChild, detachChild, unwinding, target, exit) 1.1 ms | child exit + parent wake-up
//   600 µs: ~2.7 ms (CPython ~1.9 ms). A bare fork+_exit+waitpid of this process costs ~0.85 ms,
//   as CPython's (~1.1 ms): the difference is the child's own work, and most of that is page
//   faults (several µs each here): every page the child writes is copied, and file-backed pages
//   it reads are re-faulted because fork() does not copy their page-table entries. A child took
//   ~490 faults; now ~280, from: Node's code in large anonymous pages (bin/multiproc.js), the
//   addon bound at load (binding.gyp -z now: lazy symbol lookups in the child faulted in the
//   symbol tables of every library), child-only JS compiled in the parent (popen/child.ts), the
//   fork-safety census cached (forkProbe). Tried and dropped: forcing one copy-on-write page
//   into each read-only file mapping so that fork() copies their entries too -- child faults
//   fell to ~210 but fork() itself then copied every resident code/rodata page entry: slower.
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <uv.h>
#ifdef __linux__
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#endif

#include <node.h>
#include <v8.h>

#include <algorithm>
#include <cstddef>
#include <string>
#include <unordered_set>
#include <vector>

#include "../addon.h"
#include "../errors.h"
#include "fd.h"
#include "fork.h"

namespace mp {

namespace {

// ---------------------------------------------------------------- /proc helpers

[[maybe_unused]] std::string ReadSmallFile(const char* path) {
  std::string s;
  UniqueFd fd(RetryEintr([&] { return open(path, O_RDONLY | O_CLOEXEC); }));
  if (!fd.Valid()) return s;
  char buf[16384];
  for (;;) {
    ssize_t n = RetryEintr([&] { return read(fd.Get(), buf, sizeof buf); });
    if (n <= 0) break;
    s.append(buf, static_cast<size_t>(n));
  }
  return s;
}

// Calls f(lo, hi, line, eol) for each mapping of a /proc/self/maps text: its address range and
// where its line starts and ends in `maps`.
template <class F>
[[maybe_unused]] void ForEachMapping(const std::string& maps, F f) {
  for (size_t pos = 0; pos < maps.size();) {
    size_t eol = maps.find('\n', pos);
    if (eol == std::string::npos) eol = maps.size();
    unsigned long a = 0, b = 0;
    if (sscanf(maps.c_str() + pos, "%lx-%lx", &a, &b) == 2 && b > a) f(uintptr_t{a}, uintptr_t{b}, pos, eol);
    pos = eol + 1;
  }
}

// ---------------------------------------------------------------- the platform task queue (fact 2)
//
// Node 20's WorkerThreadsTaskRunner owns a TaskQueue laid out as
//   { uv_mutex_t lock_; uv_cond_t tasks_available_; uv_cond_t tasks_drained_; int outstanding_tasks_; ... }
// on the malloc heap. Its idle workers sit in pthread_cond_wait(&tasks_available_), i.e. in
// futex(&cond.__g_signals[g]). We find that address from /proc/self/task/*/syscall (the futex
// word most platform workers wait on inside [heap]) and derive the mutex and condvars from it.
// Only glibc's layout is known; elsewhere the repair is unavailable and the process is not
// fork-safe (the fork start method is refused, forkserver/spawn remain).
struct PlatformQueue {
  uintptr_t mutex = 0;  // uv_mutex_t lock_
  uintptr_t cond = 0;   // uv_cond_t tasks_available_ (tasks_drained_ follows, then the counter)
  int waiters = 0;
};

#if defined(__linux__) && defined(__GLIBC__) && NODE_MAJOR_VERSION >= 18 && NODE_MAJOR_VERSION <= 22
#define MP_HAVE_QUEUE_REPAIR 1
constexpr size_t kSignalsOffset = offsetof(pthread_cond_t, __data.__g_signals);

int* OutstandingTasks(const PlatformQueue& q) {
  return reinterpret_cast<int*>(q.cond + 2 * sizeof(pthread_cond_t));
}

// Returns "" and fills `out` on success, or says what did not check out.
std::string LocatePlatformQueue(PlatformQueue* out) {
  uintptr_t heapLo = 0, heapHi = 0;
  {
    std::string maps = ReadSmallFile("/proc/self/maps");
    size_t at = maps.find("[heap]");
    if (at == std::string::npos) return "no [heap] mapping";
    size_t line = maps.rfind('\n', at);
    line = line == std::string::npos ? 0 : line + 1;
    if (sscanf(maps.c_str() + line, "%lx-%lx", &heapLo, &heapHi) != 2) return "cannot parse /proc/self/maps";
  }
  std::vector<std::pair<uintptr_t, int>> counts;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return "cannot read /proc/self/task";
  while (struct dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string path = std::string("/proc/self/task/") + e->d_name + "/syscall";
    std::string sc = ReadSmallFile(path.c_str());
    long nr = -1;
    unsigned long a1 = 0;
    if (sscanf(sc.c_str(), "%ld %lx", &nr, &a1) != 2 || nr != SYS_futex) continue;
    if (a1 < heapLo || a1 >= heapHi) continue;
    bool seen = false;
    for (auto& c : counts)
      if (c.first == a1) c.second++, seen = true;
    if (!seen) counts.push_back({a1, 1});
  }
  closedir(d);
  PlatformQueue q;
  uintptr_t word = 0;
  for (auto& c : counts)
    if (c.second > q.waiters) q.waiters = c.second, word = c.first;
  if (word == 0) return "no idle V8 platform worker found";
  // The waiter sleeps on __g_signals[0] or [1]; the condvar is 8-byte aligned.
  q.cond = (word - kSignalsOffset) % alignof(pthread_cond_t) == 0 ? word - kSignalsOffset
                                                                 : word - kSignalsOffset - sizeof(unsigned int);
  q.mutex = q.cond - sizeof(pthread_mutex_t);
  // Sanity: a default (normal) mutex, currently unlocked (the workers are idle), a condvar that
  // counts at least the waiters we saw (__wrefs holds the waiter count << 3), and a plausible
  // outstanding-task counter.
  auto* m = reinterpret_cast<pthread_mutex_t*>(q.mutex);
  auto* c = reinterpret_cast<pthread_cond_t*>(q.cond);
  if (m->__data.__kind != 0) return "platform queue mutex is not a normal mutex";
  if (m->__data.__lock != 0) return "platform queue mutex is held";
  if (static_cast<int>(c->__data.__wrefs >> 3) < q.waiters) return "platform queue condvar does not count its waiters";
  int outstanding = *OutstandingTasks(q);
  if (outstanding < 0 || outstanding > 100000) return "platform queue task counter is implausible";
  *out = q;
  return "";
}

// In the child, before any JS: the workers are gone, so the queue is reset to "no waiters, no
// tasks in flight" (BlockingDrain() would otherwise wait for tasks nobody runs).
void RepairPlatformQueue(const PlatformQueue& q) {
  pthread_mutex_init(reinterpret_cast<pthread_mutex_t*>(q.mutex), nullptr);
  pthread_cond_init(reinterpret_cast<pthread_cond_t*>(q.cond), nullptr);
  pthread_cond_init(reinterpret_cast<pthread_cond_t*>(q.cond + sizeof(pthread_cond_t)), nullptr);
  *OutstandingTasks(q) = 0;
}
#else
std::string LocatePlatformQueue(PlatformQueue*) { return "the V8 platform repair is not available on this platform / Node version"; }
void RepairPlatformQueue(const PlatformQueue&) {}
#endif

// Threads, other than the calling thread, that sit in epoll_wait: Node's delayed-task scheduler
// is one; every worker_threads Worker (idle) and the inspector's I/O thread add one each.
//
// The census reads one /proc/self/task/<tid>/syscall file per thread (3 syscalls each, ~100 µs
// per start with Node's 6 threads). Its answer can only change when a thread starts (a Worker,
// the inspector): thread ids are not reused while the thread lives, and a thread that starts
// shows up as a new id. So the result is cached with the sorted list of thread ids it was taken
// over, and re-taken only when one directory listing (~15 µs) shows a different list. (A thread
// that was busy, not in epoll_wait, at the census and idles later is missed either way: the
// census is a backstop for Workers created before the library loaded; live Workers are counted
// in JS, lib/forksafe.ts.)
struct LoopCensus {
  std::vector<long> tids;  // sorted, without the calling thread
  int loopThreads = -1;
};

#ifdef __linux__
static bool ListTasks(long self, std::vector<long>* out) {
  std::vector<long>& tids = *out;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return false;
  while (struct dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    long tid = atol(e->d_name);
    if (tid != self) tids.push_back(tid);
  }
  closedir(d);
  std::sort(tids.begin(), tids.end());
  return true;
}
#endif

int CountLoopThreads(LoopCensus* cache) {
#ifdef __linux__
  const long self = syscall(SYS_gettid);
  std::vector<long> tids;
  if (!ListTasks(self, &tids)) return -1;
  if (cache->loopThreads >= 0 && tids == cache->tids) return cache->loopThreads;
  int n = 0;
  for (long tid : tids) {
    std::string path = "/proc/self/task/" + std::to_string(tid) + "/syscall";
    std::string sc = ReadSmallFile(path.c_str());
    long nr = -1;
    if (sscanf(sc.c_str(), "%ld", &nr) != 1) continue;
#ifdef SYS_epoll_wait
    if (nr == SYS_epoll_wait) n++;
#endif
#ifdef SYS_epoll_pwait
    if (nr == SYS_epoll_pwait) n++;
#endif
#ifdef SYS_epoll_pwait2
    if (nr == SYS_epoll_pwait2) n++;
#endif
  }
  cache->tids = std::move(tids);
  cache->loopThreads = n;
  return n;
#else
  (void)cache;
  return -1;
#endif
}

// ---------------------------------------------------------------- heap inheritance (fact 1)

// Lowest special mapping ([vvar], [vdso], ...): madvise() over one of them fails with EINVAL.
[[maybe_unused]] uintptr_t SpecialMappingsStart() {
  std::string maps = ReadSmallFile("/proc/self/maps");
  uintptr_t limit = UINTPTR_MAX;
  ForEachMapping(maps, [&](uintptr_t a, uintptr_t, size_t line, size_t eol) {
    size_t br = maps.find('[', line);
    if (br == std::string::npos || br >= eol) return;
    const char* name = maps.c_str() + br;
    if (!strncmp(name, "[vvar", 5) || !strncmp(name, "[vdso", 5) || !strncmp(name, "[vsyscall", 9) ||
        !strncmp(name, "[uprobes", 8))
      if (a < limit) limit = a;
  });
  return limit == UINTPTR_MAX ? 0 : limit;
}

}  // namespace

// ---------------------------------------------------------------- heap placement
//
// V8 asks mmap() for each heap page (256 KiB; a large object gets its own) at a random address
// hint in [0, 64 TiB) on x64, and the kernel honours a free hint. So the JS heap of a Node process
// is hundreds of mappings strewn over the whole range, each needing page tables of its own (a PTE
// page, a PMD page, often a PUD page), and fork() allocates and copies all of them, the child's
// exit frees them again. Measured on this VM: 40 scattered 256 KiB pages cost ~130 µs more per
// fork+exit than the same pages side by side, and a Node process with a 50 MB heap had 2.3 MB of
// page tables (0.8 MB with this reservation; its start+join went from 6.05 to 5.43 ms, medians of
// 5 interleaved pairs).
//
// ReserveHintRange() maps the free part of that range PROT_NONE (no memory, no page tables, no
// commit charge: not writable). A hint that falls on it is refused, and the kernel places the page
// itself, top-down next to the previous ones, as for mmap(NULL). V8 does not need its hint honoured
// (it trims an aligned block out of whatever it gets); what is given up is the randomness of each
// page's address within the process (the kernel still randomises where the top-down area starts),
// which is why JS keeps an opt-out.
//
// Only whole free 512 GiB slots (one top-level page-table entry each) are reserved, above the first:
//  - a reservation that shares a slot with a mapping is unmapped, at every exit, by a walk through
//    that slot's lower-level tables. Next to 40 scattered pages (in C), reserving the gaps exactly
//    made each fork+exit ~290 µs slower, in whole 1 GiB units ~55 µs, in whole slots ~10 µs. The
//    slots V8's earlier pages use keep taking hints: 52-53 of the 63.5 TiB are reserved when the
//    library loads in a fresh process, and 14-24% of the heap grown afterwards still scatters.
//  - the first slot stays free: brk of a non-PIE binary, MAP_32BIT users, V8's code range near the
//    binary.
// Races: another thread may map into a slot between our read of /proc/self/maps and our mmap();
// MAP_FIXED_NOREPLACE then fails (EEXIST) and that run is skipped. MAP_FIXED would have unmapped
// that thread's memory. A kernel older than 4.17 takes the flag as a mere hint: a reservation
// placed elsewhere is unmapped again.
// Not done where a finite RLIMIT_AS would count the reservation, nor outside Linux x64 (arm64 V8
// hints span [0, 256 GiB), less than one slot).
static double ReserveHintRange() {
#if defined(__linux__) && defined(__x86_64__) && defined(MAP_FIXED_NOREPLACE)
  struct rlimit as;
  if (getrlimit(RLIMIT_AS, &as) != 0 || as.rlim_cur != RLIM_INFINITY) return 0;
  constexpr int kSlotShift = 39;  // 512 GiB: what one top-level page-table entry maps
  constexpr int kSlots = 128;     // V8's hints on x64: [0, 64 TiB)
  bool used[kSlots + 1] = {};
  used[0] = true;
  std::string maps = ReadSmallFile("/proc/self/maps");
  if (maps.empty()) return 0;
  ForEachMapping(maps, [&](uintptr_t a, uintptr_t b, size_t, size_t) {
    for (uintptr_t s = a >> kSlotShift; s <= (b - 1) >> kSlotShift && s < kSlots; s++) used[s] = true;
  });
  used[kSlots] = true;  // sentinel
  double reserved = 0;
  for (int s = 1; s < kSlots;) {
    if (used[s]) {
      s++;
      continue;
    }
    int e = s;
    while (!used[e]) e++;
    void* want = reinterpret_cast<void*>(uintptr_t{static_cast<unsigned>(s)} << kSlotShift);
    const size_t len = size_t{static_cast<unsigned>(e - s)} << kSlotShift;
    void* got = mmap(want, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    if (got != MAP_FAILED && got != want) munmap(got, len);  // pre-4.17 kernel: placed elsewhere
    if (got == want) {
      madvise(want, len, MADV_DONTDUMP);  // nothing to dump; keeps gcore from listing 50 TiB
      reserved += static_cast<double>(len);
    }
    s = e;
  }
  return reserved;
#else
  return 0;
#endif
}

// ---------------------------------------------------------------- per-environment state

struct ChildWatch;

struct ForkState : ModuleState {
  uintptr_t doforkLimit = 0;  // computed once: the [vvar] start does not move
  bool queueLocated = false;
  std::string queueProblem = "not probed";
  PlatformQueue queue;
  LoopCensus census;  // a forked child inherits it: its own thread list differs, so it re-counts
  ChildWatch* child = nullptr;  // set in a detached Process child; lives until _exit
};

static ForkState* State(Napi::Env env) {
  AddonData* d = GetAddonData(env);
  if (!d->slots[AddonData::kFork]) d->slots[AddonData::kFork] = std::make_unique<ForkState>();
  return d->Get<ForkState>(AddonData::kFork);
}

// One madvise(MADV_DOFORK) over [64K, [vvar]): the kernel applies it to every VMA in range and
// reports ENOMEM for the holes, which is expected. 9 µs - 0.8 ms; reading smaps costs ~1 s.
static int MakeHeapInheritable(ForkState* st) {
#if defined(__linux__) && defined(MADV_DOFORK)
  if (st->doforkLimit == 0) st->doforkLimit = SpecialMappingsStart();
  if (st->doforkLimit == 0) return ENOENT;
  const uintptr_t lo = 0x10000;
  if (madvise(reinterpret_cast<void*>(lo), st->doforkLimit - lo, MADV_DOFORK) < 0 && errno != ENOMEM) return errno;
#else
  (void)st;  // no MADV_DONTFORK elsewhere: the heap is inherited as is
#endif
  return 0;
}

// probe() -> { queue: boolean, queueProblem: string, loopThreads: number }
// Locates (once) and sanity-checks the platform task queue; counts threads that run their own
// event loop. JS turns this into isForkSafe() and its error message.
static Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ForkState* st = State(env);
  if (!st->queueLocated) {
    // A worker that just woke up holds the mutex for a moment: try a few times.
    for (int attempt = 0; attempt < 5 && !st->queueLocated; attempt++) {
      st->queueProblem = LocatePlatformQueue(&st->queue);
      st->queueLocated = st->queueProblem.empty();
      if (!st->queueLocated) usleep(200);
    }
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("queue", Napi::Boolean::New(env, st->queueLocated));
  o.Set("queueProblem", Napi::String::New(env, st->queueProblem));
  o.Set("loopThreads", Napi::Number::New(env, CountLoopThreads(&st->census)));
  return o;
}

static void ExitHandler(node::Environment*, int code) {
  // The child's stdout/stderr are synchronous in Node for files, pipes and TTYs; only C stdio
  // can hold buffered bytes.
  fflush(stdout);
  fflush(stderr);
  _exit(code);
}

// fork(deathSignal: boolean) -> pid in the parent, 0 in the child (C semantics: both return).
static Napi::Value Fork(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ForkState* st = State(env);
  const bool deathSignal = info.Length() > 0 && info[0].ToBoolean().Value();
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr)
    return ThrowCode(env, "ERR_MP_FORK", "cannot get the event loop");
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  node::Environment* nodeEnv = node::GetCurrentEnvironment(isolate->GetCurrentContext());
  if (int err = MakeHeapInheritable(st)) return ThrowErrno(env, err, "madvise");

  // Race: a signal delivered to the child before uv_loop_fork() would run libuv's handler, which
  // writes to the *parent's* signal pipe (still shared): the parent would see the child's signal.
  // So every signal stays blocked across fork() until the child has its own loop.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid != 0) {
    const int err = errno;
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) return ThrowErrno(env, err, "fork");
    return Napi::Number::New(env, pid);
  }
  // ---- child: only this thread exists. No JS has run yet.
  if (st->queueLocated) RepairPlatformQueue(st->queue);
  // libuv's thread pool re-creates itself in the child, but not this loop's completion queue:
  // a pool thread may have held wq_mutex at fork (the child's first completion would deadlock),
  // and work the parent's pool finished but the parent has not delivered yet sits in loop->wq
  // (the child would run the parent's callbacks at its first own completion). Both reset:
  // like work still in flight, the parent's finished work never completes in the child.
  uv_mutex_init(&loop->wq_mutex);
  loop->wq.next = loop->wq.prev = &loop->wq;
  if (int r = uv_loop_fork(loop)) {
    fprintf(stderr, "multiproc: uv_loop_fork failed in the forked child: %s\n", uv_strerror(r));
    _exit(70);
  }
#ifdef __linux__
  if (deathSignal) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    // Race: the parent may have died before prctl(); then we were already re-parented and no
    // death signal will ever come. Die now, as the signal would have made us.
    if (getppid() != parent) kill(getpid(), SIGKILL);
  }
#else
  (void)deathSignal;
  (void)parent;
#endif
#ifdef __GLIBC__
  // Freed heap memory stays with the child: glibc gives the top of the heap back to the kernel
  // once 128 KiB of it is free, and V8 mallocs and frees its compiler zones at every
  // optimisation, so each compile faulted the same pages in again (copy-on-write or zero-fill
  // faults, ~12 us each on the VM measured: a cold Queue producer's faults in its first 10k
  // puts 790 -> 440). The parent's own allocator policy is left alone.
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
  // process.exit() and fatal errors end here instead of in Node's teardown (fact 4).
  node::SetProcessExitHandler(nodeEnv, ExitHandler);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return Napi::Number::New(env, 0);
}

// ---------------------------------------------------------------- Process children: run only the target

// Intrusive queue of libuv >= 1.46 (struct uv__queue { next, prev }).
static bool QueueEmpty(const struct uv__queue* q) { return q->next == q; }
static void QueueRemove(struct uv__queue* q) {
  q->prev->next = q->next;
  q->next->prev = q->prev;
  q->next = q->prev = q;
}

struct ChildWatch {
  napi_env env = nullptr;
  uv_loop_t* loop = nullptr;
  uv_prepare_t prepare;
  // Keeps the loop from blocking before the first prepare: a grandchild is forked *inside* the
  // prepare phase, and the poll that follows would otherwise sleep before our handle ever ran.
  uv_idle_t kick;
  napi_ref bootstrap = nullptr;
  napi_ref onIdle = nullptr;
  napi_async_context context = nullptr;
  // Requests in flight at fork: the parent's thread-pool work never completes here.
  unsigned int inheritedRequests = 0;
  // Node's own timer/immediate/idle handles (inherited, never freed): their ref state counts the
  // parent's timers too, so JS counts the child's timers itself (lib/popen/child.ts).
  std::unordered_set<uv_handle_t*> infra;
  bool started = false;
  // A grandchild forked inside one of our JS calls retires this watch (it has its own): the
  // call returns into OnPrepare in the grandchild, which must then do nothing more.
  bool retired = false;
};

bool ChildIsUnwinding(Napi::Env env) {
  AddonData* d = GetAddonData(env);
  auto* st = d->Get<ForkState>(AddonData::kFork);
  return st != nullptr && st->child != nullptr && !st->child->started;
}

void ReportCallbackFailure(Napi::Env env) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) != napi_ok || !pending) return;
  napi_value err;
  napi_get_and_clear_last_exception(env, &err);
  if (!ChildIsUnwinding(env)) napi_fatal_exception(env, err);
}

// Is there child-created work left that the loop knows about (handles, requests, callbacks)?
static bool LoopHasChildWork(ChildWatch* w) {
  uv_loop_t* loop = w->loop;
  if (loop->closing_handles != nullptr) return true;
  if (!QueueEmpty(&loop->pending_queue)) return true;
  // An inherited request can still complete here (a write the parent had queued on a socket
  // passed to the target, or on stdout): then the inherited count shrinks with it.
  if (loop->active_reqs.count < w->inheritedRequests) w->inheritedRequests = loop->active_reqs.count;
  if (loop->active_reqs.count > w->inheritedRequests) return true;
  struct Walk {
    ChildWatch* w;
    bool busy;
  } walk{w, false};
  uv_walk(
      loop,
      [](uv_handle_t* h, void* arg) {
        auto* k = static_cast<Walk*>(arg);
        if (k->busy || h == reinterpret_cast<uv_handle_t*>(&k->w->prepare) ||
            h == reinterpret_cast<uv_handle_t*>(&k->w->kick))
          return;
        if (uv_is_active(h) && uv_has_ref(h) && !uv_is_closing(h) && !k->w->infra.count(h)) k->busy = true;
      },
      &walk);
  return walk.busy;
}

// Calls a JS function in its own callback scope (ticks and microtasks run after it).
// Returns false if it threw (the error was handed to Node's uncaught-exception handling).
static bool CallJs(ChildWatch* w, napi_ref ref, int arg, bool* result) {
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value fn, global, argv, ret = nullptr;
  napi_get_reference_value(env, ref, &fn);
  napi_get_global(env, &global);
  napi_create_int32(env, arg, &argv);
  napi_status s = napi_make_callback(env, w->context, global, fn, 1, &argv, &ret);
  bool ok = s == napi_ok;
  if (!ok) {
    // A grandchild forked inside this call is unwinding its copy of our stack: not an error.
    ReportCallbackFailure(Napi::Env(env));
  } else if (result != nullptr) {
    bool b = false;
    napi_get_value_bool(env, ret, &b);
    *result = b;
  }
  napi_close_handle_scope(env, scope);
  return ok;
}

// The termination requested by ChildDetach normally ends by itself: V8 clears it when the
// outermost JS frame returns through the API. One exception: a fork inside a microtask that
// Node runs straight from C++ (a checkpoint with no JS below). Then V8 keeps the termination
// scheduled, every later call into JS bails out at once, and Node's timer code retries forever.
// This runs when that checkpoint ends; with no JS frame left, the unwinding is complete.
static void OnMicrotasksCompleted(v8::Isolate* isolate, void* data) {
  if (!isolate->IsExecutionTerminating()) return;
  v8::HandleScope hs(isolate);
  if (v8::StackTrace::CurrentStackTrace(isolate, 1)->GetFrameCount() > 0) return;  // still unwinding
  isolate->CancelTerminateExecution();
}

// Runs before the loop would block, every turn: the only point where "nothing left to do" can
// be decided without missing the last callback of the turn.
static void OnPrepare(uv_prepare_t* h) {
  auto* w = static_cast<ChildWatch*>(h->data);
  if (!w->started) {
    w->started = true;
    v8::Isolate* isolate = v8::Isolate::GetCurrent();
    isolate->RemoveMicrotasksCompletedCallback(OnMicrotasksCompleted, w);
    CallJs(w, w->bootstrap, 0, nullptr);
    if (w->retired) return;
    // Fall through: a synchronous target is already done, and nothing may wake the loop again.
  }
  if (LoopHasChildWork(w)) return;
  // Phase 0: JS checks the target and its timers, and emits 'beforeExit' if they are done.
  bool emitted = false;
  if (!CallJs(w, w->onIdle, 0, &emitted) || w->retired || !emitted) return;
  // 'beforeExit' listeners ran (with their ticks/microtasks): exit unless they made new work.
  if (LoopHasChildWork(w)) return;
  CallJs(w, w->onIdle, 1, nullptr);  // exits the process if still idle
}

// childDetach(keepFds: number[], bootstrap: () => void, onIdle: (phase) => boolean)
//
// Called in a Process child right after fork(). Quiets what the child inherited:
//  - every inherited handle is unref'd; fs-event, fs-poll and poll handles are stopped (signal
//    handles were closed by the caller, in JS, when it removed the parent's signal listeners:
//    libuv then restores each signal's default disposition);
//  - every inherited I/O watcher is disarmed (uv_loop_fork re-queued them all) except stdout,
//    stderr, the loop's own wake-up fds and `keepFds` (sockets passed to the target), so the
//    parent's servers, sockets and IPC channel are never read or accepted on in the child;
//  - callbacks already queued for disarmed watchers are dropped; fd 0 becomes /dev/null.
// Then it arms a prepare handle that starts `bootstrap` on the next loop turn and decides the
// natural exit every turn, and asks V8 to terminate: the caller's whole JS stack (the parent's
// program) unwinds without running any catch/finally. The caller must not run any more JS.
static Napi::Value ChildDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ForkState* st = State(env);
  if (info.Length() < 3 || !info[0].IsArray() || !info[1].IsFunction() || !info[2].IsFunction())
    return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "childDetach(keepFds, bootstrap, onIdle)", true);
  std::unordered_set<int> keep{1, 2};
  Napi::Array fds = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < fds.Length(); i++) keep.insert(fds.Get(i).As<Napi::Number>().Int32Value());

  // A grandchild inherits its parent's watch: retire it (its handle stays behind, stopped).
  if (ChildWatch* old = st->child) {
    uv_prepare_stop(&old->prepare);
    napi_delete_reference(env, old->bootstrap);
    napi_delete_reference(env, old->onIdle);
    napi_async_destroy(env, old->context);
    v8::Isolate::GetCurrent()->RemoveMicrotasksCompletedCallback(OnMicrotasksCompleted, old);
    old->infra.clear();
    old->retired = true;
  }
  auto* w = new ChildWatch();  // lives until _exit
  w->env = env;
  napi_get_uv_event_loop(env, &w->loop);
  uv_loop_t* loop = w->loop;

  uv_walk(
      loop,
      [](uv_handle_t* h, void* arg) {
        auto* w = static_cast<ChildWatch*>(arg);
        uv_unref(h);
        if (uv_is_closing(h)) return;  // its close callback still runs; nothing to stop
        switch (h->type) {
          // UV_SIGNAL: not stopped here. Node's SignalWrap keeps a per-signal count that closing
          // a natively stopped handle corrupts (abort); the parent's signal listeners are removed
          // in JS just before this call, which stops them the Node way.
          case UV_FS_EVENT: uv_fs_event_stop(reinterpret_cast<uv_fs_event_t*>(h)); break;
          case UV_FS_POLL: uv_fs_poll_stop(reinterpret_cast<uv_fs_poll_t*>(h)); break;
          case UV_POLL: uv_poll_stop(reinterpret_cast<uv_poll_t*>(h)); break;
          case UV_TIMER:
          case UV_IDLE:
          case UV_CHECK:
          case UV_PREPARE: w->infra.insert(h); break;
          default: break;
        }
      },
      w);

  for (unsigned int fd = 0; fd < loop->nwatchers; fd++) {
    uv__io_t* io = loop->watchers[fd];
    if (io == nullptr || keep.count(static_cast<int>(fd))) continue;
    if (io == &loop->async_io_watcher || io == &loop->signal_io_watcher) continue;
    if (!QueueEmpty(&io->watcher_queue)) QueueRemove(&io->watcher_queue);
    if (!QueueEmpty(&io->pending_queue)) QueueRemove(&io->pending_queue);
    io->pevents = 0;
    io->events = 0;
  }
  // The child must not read the parent's stdin (CPython gives it /dev/null as well).
  {
    UniqueFd devnull(RetryEintr([] { return open("/dev/null", O_RDONLY | O_CLOEXEC); }));
    if (devnull.Valid() && devnull.Get() != 0) RetryEintr([&] { return dup2(devnull.Get(), 0); });
  }
  w->inheritedRequests = loop->active_reqs.count;

  napi_create_reference(env, info[1], 1, &w->bootstrap);
  napi_create_reference(env, info[2], 1, &w->onIdle);
  napi_value name;
  napi_create_string_utf8(env, "multiproc.child", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, nullptr, name, &w->context);
  uv_prepare_init(loop, &w->prepare);
  w->prepare.data = w;
  uv_prepare_start(&w->prepare, OnPrepare);  // ref'd: uv_run never returns into Node's exit path
  uv_idle_init(loop, &w->kick);
  uv_idle_start(&w->kick, [](uv_idle_t* h) { uv_idle_stop(h); });
  st->child = w;

  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  isolate->AddMicrotasksCompletedCallback(OnMicrotasksCompleted, w);
  isolate->TerminateExecution();
  // Promise reactions the parent queued before forking would run in the child as soon as the
  // stack is unwound. Running the queue now, under the termination request, makes V8 drop it
  // whole (a no-op when we are inside a microtask: V8 then drops the rest itself). The request
  // stays pending and unwinds the caller's stack on return.
  isolate->PerformMicrotaskCheckpoint();
  return env.Undefined();
}

// ---------------------------------------------------------------- small process calls

// loopAlive() -> uv_loop_alive: does the loop still have work (as Node decides at 'beforeExit')?
static Napi::Value LoopAlive(const Napi::CallbackInfo& info) {
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(info.Env(), &loop);
  return Napi::Boolean::New(info.Env(), loop != nullptr && uv_loop_alive(loop) != 0);
}

// reserveHintRange() -> bytes of address space reserved (0: not done here); see ReserveHintRange.
static Napi::Value ReserveHintRangeJs(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), ReserveHintRange());
}

static Napi::Value GetPid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), getpid()); }
static Napi::Value GetPpid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), getppid()); }

static Napi::Value SetSid(const Napi::CallbackInfo& info) {
  pid_t r = setsid();
  if (r < 0) return ThrowErrno(info.Env(), errno, "setsid");
  return Napi::Number::New(info.Env(), r);
}

// _exit(code): no 'exit' handlers, no stdio flush beyond C's.
static Napi::Value Exit(const Napi::CallbackInfo& info) {
  int code = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  _exit(code);
  return info.Env().Undefined();
}

void InitFork(Napi::Env env, Napi::Object exports) {
  exports.Set("forkProbe", Napi::Function::New(env, Probe, "forkProbe"));
  exports.Set("fork", Napi::Function::New(env, Fork, "fork"));
  exports.Set("childDetach", Napi::Function::New(env, ChildDetach, "childDetach"));
  exports.Set("loopAlive", Napi::Function::New(env, LoopAlive, "loopAlive"));
  exports.Set("reserveHintRange", Napi::Function::New(env, ReserveHintRangeJs, "reserveHintRange"));
  exports.Set("getpid", Napi::Function::New(env, GetPid, "getpid"));
  exports.Set("getppid", Napi::Function::New(env, GetPpid, "getppid"));
  exports.Set("setsid", Napi::Function::New(env, SetSid, "setsid"));
  exports.Set("exit", Napi::Function::New(env, Exit, "exit"));
}

}  // namespace mp
