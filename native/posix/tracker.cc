// The resource tracker's process (lib/resource_tracker.ts, CPython's resource_tracker.main) on
// Linux: a forked child that runs the small loop below, instead of a fresh Node process whose
// start-up (~60-80 ms of CPU) took a core from every program at its first queue or segment.
//
// startTracker(lifelineReadFd) -> pid. The child reads "R|U \t type \t url-encoded name \n"
// lines from the lifeline; at EOF (every process holding the write end is gone) it unlinks the
// names still registered, says so on stderr, and exits.
#include <napi.h>

#ifdef __linux__
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "../addon.h"
#include "../errors.h"
#include "fd.h"

namespace mp {
namespace {

#ifdef __linux__

// Everything in this block up to StartTracker runs in the tracker: a copy of a process that may
// have had other threads, at any point of their work (any lock may be held). So the tracker
// makes system calls and runs this file's code only: no malloc, no stdio, no C++ runtime, no JS.

void WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

bool Contains(uintptr_t lo, uintptr_t hi, uintptr_t a) { return a >= lo && a < hi; }

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

unsigned long ParseHex(const char*& p) {
  unsigned long v = 0;
  for (int d; (d = HexDigit(*p)) >= 0; p++) v = v * 16 + static_cast<unsigned long>(d);
  return v;
}

// Calls onLine(line, length) for each line read from fd (its '\n' replaced by a NUL) until EOF
// or an error. A line longer than the buffer is skipped: none of those read here is.
template <class F>
void ForEachLine(int fd, F onLine) {
  char buf[8192];
  size_t have = 0;
  bool skipping = false;
  for (;;) {
    const ssize_t n = read(fd, buf + have, sizeof buf - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    have += static_cast<size_t>(n);
    size_t start = 0;
    for (size_t i = 0; i < have; i++) {
      if (buf[i] != '\n') continue;
      buf[i] = '\0';
      if (!skipping) onLine(buf + start, i - start);
      skipping = false;
      start = i + 1;
    }
    if (start == 0 && have == sizeof buf) {
      skipping = true;
      have = 0;
    } else {
      memmove(buf, buf + start, have - start);
      have -= start;
    }
  }
}

struct MapsCursor {
  uintptr_t keep[3];
  uintptr_t prevEnd = 0;
  bool prevFile = false;
};

// One line of /proc/self/maps: "start-end perms offset dev inode [name]".
void ReleaseMapping(const char* line, MapsCursor* c) {
  const char* p = line;
  const uintptr_t lo = ParseHex(p);
  if (*p++ != '-') return;
  const uintptr_t hi = ParseHex(p);
  if (*p++ != ' ') return;
  const char* perms = p;
  for (int field = 0; field < 4; field++) {  // perms, offset, dev, inode
    while (*p && *p != ' ') p++;
    while (*p == ' ') p++;
  }
  const bool named = *p != '\0';
  // A library's .bss beyond its file's last page is an unnamed mapping right after the file's.
  const bool bssTail = !named && lo == c->prevEnd && c->prevFile;
  c->prevEnd = hi;
  c->prevFile = *p == '/';
  for (const uintptr_t a : c->keep)
    if (Contains(lo, hi, a)) return;
  if (perms[3] == 's') {
    // Shared memory of the program's (a segment it may unlink, an anonymous shared region):
    // mapped here, it would stay allocated until the tracker exits.
    munmap(reinterpret_cast<void*>(lo), hi - lo);
  } else if (perms[1] == 'w' && !named && !bssTail) {
    madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
  }
}

// Drops the tracker's references to the parent's memory (the JS heap, large buffers, shared
// mappings). Otherwise the tracker, alive as long as the program, would pin a snapshot of it: each
// page the parent writes afterwards would be copied (a page fault and a page of memory each), and
// the program's shared memory would outlive its unmapping. Kept: private file mappings and named
// ones ([heap], [stack]: libc's and the loader's data live there, as in .bss tails), and the
// mappings that hold this thread's stack, its thread control block (the stack-protector canary)
// and errno. Only this file's code runs afterwards, and it touches nothing else.
void ReleaseInheritedMemory() {
  MapsCursor c;
  c.keep[0] = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  c.keep[1] = static_cast<uintptr_t>(pthread_self());  // glibc and musl: the thread's control block
  c.keep[2] = reinterpret_cast<uintptr_t>(&errno);
  const int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ForEachLine(fd, [&](const char* line, size_t) { ReleaseMapping(line, &c); });
  close(fd);
}

// `ps` shows "multiproc-resource-tracker", not a second copy of the program's command line: the
// command line is read from [arg_start, arg_end) of the process (fields 48-49 of /proc/self/stat),
// memory on the main thread's stack that the tracker owns.
void SetCommandLine(const char* title) {
  const int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char buf[2048];
  const ssize_t n = RetryEintr([&] { return read(fd, buf, sizeof buf - 1); });
  close(fd);
  if (n <= 0) return;
  buf[n] = '\0';
  const char* p = strrchr(buf, ')');  // the name may contain spaces and ')'
  if (p == nullptr) return;
  p++;
  unsigned long argStart = 0, argEnd = 0;
  for (int field = 3; field <= 49 && *p; field++) {
    while (*p == ' ') p++;
    unsigned long v = 0;
    while (*p >= '0' && *p <= '9') v = v * 10 + static_cast<unsigned long>(*p++ - '0');
    if (field == 48) argStart = v;
    if (field == 49) argEnd = v;
    while (*p && *p != ' ') p++;
  }
  const size_t len = strlen(title);
  if (argStart == 0 || argEnd <= argStart + len) return;
  char* area = reinterpret_cast<char*>(argStart);
  memset(area, 0, argEnd - argStart);
  memcpy(area, title, len);
}

// The registered names: "type\tencoded-name" strings in an array of fixed-size slots, in memory
// mapped after the release above. A program has a handful live at a time; removal is a scan.
struct Names {
  static constexpr size_t kSlot = 256;
  char* slots = nullptr;
  size_t count = 0;
  size_t capacity = 0;

  long Find(const char* key) const {
    for (size_t i = 0; i < count; i++)
      if (strcmp(slots + i * kSlot, key) == 0) return static_cast<long>(i);
    return -1;
  }
  void Add(const char* key, size_t len) {
    if (len >= kSlot || Find(key) >= 0) return;
    if (count == capacity) {
      const size_t grown = capacity == 0 ? 1024 : capacity * 2;
      void* m = capacity == 0 ? mmap(nullptr, grown * kSlot, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                              : mremap(slots, capacity * kSlot, grown * kSlot, MREMAP_MAYMOVE);
      if (m == MAP_FAILED) return;  // out of memory: this name is not cleaned up
      slots = static_cast<char*>(m);
      capacity = grown;
    }
    memcpy(slots + count * kSlot, key, len + 1);
    count++;
  }
  void Remove(const char* key) {
    const long i = Find(key);
    if (i < 0) return;
    count--;
    if (static_cast<size_t>(i) != count) memcpy(slots + i * kSlot, slots + count * kSlot, kSlot);
  }
};

void HandleLine(Names* names, char* line, size_t len) {
  // "R\t" or "U\t", then "type\tname": the key.
  if (len < 4 || line[1] != '\t' || memchr(line + 2, '\t', len - 2) == nullptr) return;
  if (line[0] == 'R') names->Add(line + 2, len - 2);
  else if (line[0] == 'U') names->Remove(line + 2);
}

// encodeURIComponent's inverse, into out (at least as long as in).
void Decode(const char* in, char* out) {
  for (; *in; in++) {
    int hi, lo;
    if (in[0] == '%' && (hi = HexDigit(in[1])) >= 0 && (lo = HexDigit(in[2])) >= 0) {
      *out++ = static_cast<char>(hi * 16 + lo);
      in += 2;
    } else {
      *out++ = *in;
    }
  }
  *out = '\0';
}

[[noreturn]] void CleanUp(Names* names) {
  if (names->count > 0) {
    char msg[4096];
    size_t n = 0;
    auto put = [&](const char* s) {
      const size_t l = strlen(s);
      const size_t room = sizeof msg - 5 - n;  // keeps room for "...\n"
      memcpy(msg + n, s, l < room ? l : room);
      n += l < room ? l : room;
    };
    char count[24];
    char* digits = count + sizeof count - 1;
    *digits = '\0';
    for (size_t c = names->count; c > 0; c /= 10) *--digits = static_cast<char>('0' + c % 10);  // count > 0
    put("multiproc resource_tracker: cleaning up ");
    put(digits);
    put(" leaked object(s): ");
    for (size_t i = 0; i < names->count; i++) {
      char name[Names::kSlot];
      Decode(strchr(names->slots + i * Names::kSlot, '\t') + 1, name);
      if (i > 0) put(", ");
      put(name);
    }
    if (n == sizeof msg - 5) put("...");
    msg[n++] = '\n';
    WriteAll(2, msg, n);
  }
  for (size_t i = 0; i < names->count; i++) {
    char* key = names->slots + i * Names::kSlot;
    char* tab = strchr(key, '\t');
    *tab = '\0';
    char name[Names::kSlot];
    Decode(tab + 1, name);
    if (strcmp(key, "shared_memory") == 0) shm_unlink(name);
    else if (strcmp(key, "semaphore") == 0) sem_unlink(name);
  }
  _exit(0);
}

[[noreturn]] void TrackerMain(int lifeline) {
  // Its own session (setsid in the intermediate child): a terminal's ^C or a kill of the
  // program's process group does not reach it. SIGINT/SIGTERM/SIGHUP are ignored as well, for
  // a kill aimed at the program by name; no handler of the parent's may ever run here.
  struct sigaction ign = {}, dfl = {};
  ign.sa_handler = SIG_IGN;
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; s++) {
    const bool ignored = s == SIGINT || s == SIGTERM || s == SIGHUP || s == SIGPIPE;
    sigaction(s, ignored ? &ign : &dfl, nullptr);  // fails for SIGKILL/SIGSTOP: fine
  }
  // Race: the parent's lifeline write end is open in this copy of its fd table (and so is any
  // fd the program owns: a socket, the write end of a child's stdin). Holding them, the tracker
  // would never see EOF and could keep other programs from seeing theirs. So only the lifeline
  // (as stdin), /dev/null (stdout) and stderr (for the leak warning) stay open.
  const int high = fcntl(lifeline, F_DUPFD_CLOEXEC, 3);  // off 0-2, whatever it was
  const int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (high < 0 || dup2(high, 0) < 0) _exit(70);
  if (devnull >= 0) dup2(devnull, 1);  // (stderr is never the lifeline: lifelinePipe() keeps it off 0-2)
#ifdef SYS_close_range
  if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
#endif
  {
    struct rlimit rl;
    const long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? static_cast<long>(rl.rlim_cur) : 65536;
    for (long fd = 3; fd < max && fd < (1L << 20); fd++) close(static_cast<int>(fd));
  }
  ReleaseInheritedMemory();
  prctl(PR_SET_NAME, "mp-tracker", 0, 0, 0);
  SetCommandLine("multiproc-resource-tracker");
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  Names names;
  // Until EOF: every writer is gone (after an error nothing more will come either).
  ForEachLine(0, [&](char* line, size_t len) { HandleLine(&names, line, len); });
  CleanUp(&names);
}

// startTracker(lifelineReadFd) -> pid of the tracker.
Napi::Value StartTracker(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int lifeline = info[0].As<Napi::Number>().Int32Value();
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return ThrowErrno(env, errno, "pipe2");
  UniqueFd pidRead(p[0]), pidWrite(p[1]);
  // Race: a signal delivered between fork() and the tracker's sigaction() calls would run the
  // parent's handler there (libuv's writes to the parent's own signal pipe: the program would
  // see a signal it was never sent). Everything stays blocked until the dispositions are reset.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t mid = fork();
  if (mid == 0) {
    // The intermediate child: a new session, then the tracker, then gone at once. The tracker
    // is re-parented to init (or a subreaper) and reaped there: never a zombie of the program.
    setsid();
    const pid_t tracker = fork();
    if (tracker == 0) TrackerMain(lifeline);
    WriteAll(pidWrite.Get(), reinterpret_cast<const char*>(&tracker), sizeof tracker);
    _exit(tracker < 0 ? 1 : 0);
  }
  const int forkErr = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (mid < 0) return ThrowErrno(env, forkErr, "fork");
  pidWrite.Reset();
  pid_t tracker = -1;
  const ssize_t got = RetryEintr([&] { return read(pidRead.Get(), &tracker, sizeof tracker); });
  int status = 0;
  RetryEintr([&] { return waitpid(mid, &status, 0); });
  if (got != static_cast<ssize_t>(sizeof tracker) || tracker <= 0) return ThrowErrno(env, EAGAIN, "fork");
  return Napi::Number::New(env, tracker);
}

#endif  // __linux__

}  // namespace

// Linux only: elsewhere lib/resource_tracker.ts starts the tracker as a Node process (macOS has
// no /proc to release the inherited memory with).
void InitTracker(Napi::Env env, Napi::Object exports) {
#ifdef __linux__
  exports.Set("startTracker", Napi::Function::New(env, StartTracker, "startTracker"));
#else
  (void)env;
  (void)exports;
#endif
}

}  // namespace mp
