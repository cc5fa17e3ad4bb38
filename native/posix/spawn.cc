// Starting a fresh program: posix_spawn() of a Node binary for the spawn and forkserver start
// methods. Unlike fork(), this is safe from any process, threads and all (glibc's posix_spawn
// uses CLONE_VFORK: the child only execs), so it needs no fork-safety check.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "../addon.h"
#include "../errors.h"
#include "fd.h"

extern char** environ;

namespace mp {

namespace {

// Owns the posix_spawn attribute and file-action objects (both must be destroyed on every path).
struct SpawnSetup {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  bool attrOk = false;
  bool actionsOk = false;
  ~SpawnSetup() {
    if (attrOk) posix_spawnattr_destroy(&attr);
    if (actionsOk) posix_spawn_file_actions_destroy(&actions);
  }
};

// spawnProgram(file, argv, fdMap) -> pid. fdMap is a flat array [childFd, parentFd, ...]: the
// child gets parentFd as childFd (dup2 clears close-on-exec; the caller never maps an fd onto
// itself). Every other descriptor of this process that is close-on-exec stays behind (Node and
// this addon open all theirs that way); stdin/stdout/stderr are inherited unless mapped.
Napi::Value SpawnProgram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsArray() || !info[2].IsArray()) {
    return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "spawnProgram(file, argv, fdMap)", true);
  }
  std::string file = info[0].As<Napi::String>().Utf8Value();
  Napi::Array jsArgv = info[1].As<Napi::Array>();
  std::vector<std::string> args;
  for (uint32_t i = 0; i < jsArgv.Length(); i++) {
    Napi::Value a = jsArgv.Get(i);
    if (!a.IsString()) return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "argv must be strings", true);
    args.push_back(a.As<Napi::String>().Utf8Value());
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  SpawnSetup s;
  int err = posix_spawnattr_init(&s.attr);
  if (err != 0) return ThrowErrno(env, err, "posix_spawnattr_init");
  s.attrOk = true;
  err = posix_spawn_file_actions_init(&s.actions);
  if (err != 0) return ThrowErrno(env, err, "posix_spawn_file_actions_init");
  s.actionsOk = true;

  // Race between the mappings themselves: with [3 <- 5, 5 <- 3] the second dup2 would read the
  // fd the first one just replaced, and dup2(fd, fd) would keep close-on-exec set. So every
  // source is first duplicated above any target (close-on-exec, closed after the spawn), and
  // the file actions dup2 from those copies.
  Napi::Array fdMap = info[2].As<Napi::Array>();
  std::vector<UniqueFd> sources;
  for (uint32_t i = 0; i + 1 < fdMap.Length(); i += 2) {
    int childFd = fdMap.Get(i).As<Napi::Number>().Int32Value();
    int parentFd = fdMap.Get(i + 1).As<Napi::Number>().Int32Value();
    UniqueFd copy(fcntl(parentFd, F_DUPFD_CLOEXEC, 64));
    if (!copy.Valid()) return ThrowErrno(env, errno, "fcntl");
    err = posix_spawn_file_actions_adddup2(&s.actions, copy.Get(), childFd);
    if (err != 0) return ThrowErrno(env, err, "posix_spawn_file_actions_adddup2");
    sources.push_back(std::move(copy));
  }

  // The new program starts with no blocked signals and default dispositions: Node ignores
  // SIGPIPE and the caller may block signals, and both would otherwise be inherited over exec.
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&s.attr, &none);
  posix_spawnattr_setsigdefault(&s.attr, &all);
  posix_spawnattr_setflags(&s.attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  pid_t pid = -1;
  err = posix_spawn(&pid, file.c_str(), &s.actions, &s.attr, argv.data(), environ);
  if (err != 0) return ThrowErrno(env, err, "posix_spawn", file.c_str());
  return Napi::Number::New(env, pid);
}

}  // namespace

void InitSpawn(Napi::Env env, Napi::Object exports) {
  exports.Set("spawnProgram", Napi::Function::New(env, SpawnProgram, "spawnProgram"));
}

}  // namespace mp
