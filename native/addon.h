// Shared declarations for the multiproc addon: per-environment state and the module
// initialisers, one per OS primitive (one .cc file each).
#pragma once

#include <napi.h>

#include <memory>

namespace mp {

// State a primitive keeps for one Node environment (main thread or Worker). No statics:
// each environment that loads the addon gets its own AddonData, destroyed with it.
struct ModuleState {
  virtual ~ModuleState() = default;
};

struct AddonData {
  // One slot per primitive that needs state. Add a slot when a module needs one.
  enum Slot { kFork, kWait, kShm, kSync, kPipe, kSlotCount };
  std::unique_ptr<ModuleState> slots[kSlotCount];

  template <class T>
  T* Get(Slot s) { return static_cast<T*>(slots[s].get()); }
};

inline AddonData* GetAddonData(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

// Module initialisers: each adds its functions to `exports`. The platform seam: native/posix/
// implements every one of them (Linux, macOS); native/win/ implements those the spawn start
// method needs on Windows (errors, wait, shm, sem, pipe) under the same names; fork, futex and
// spawn exist only on POSIX (lib/ does not call them on win32).
void InitErrors(Napi::Env env, Napi::Object exports);    // errors.cc: errno / Win32 error -> SystemError
void InitFunction(Napi::Env env, Napi::Object exports);  // function.cc: where a function was defined
void InitWait(Napi::Env env, Napi::Object exports);      // exit watching, waitpid, kill
void InitShm(Napi::Env env, Napi::Object exports);       // named shared memory as SharedArrayBuffers
void InitSem(Napi::Env env, Napi::Object exports);       // named semaphores
void InitPipe(Napi::Env env, Napi::Object exports);      // pipes and framed messages
#ifndef _WIN32
void InitFork(Napi::Env env, Napi::Object exports);      // posix/fork.cc: fork + child fix-ups
void InitFutex(Napi::Env env, Napi::Object exports);     // posix/futex.cc: cross-process waits on shared words
void InitSpawn(Napi::Env env, Napi::Object exports);     // posix/spawn.cc: posix_spawn of a fresh program
void InitTracker(Napi::Env env, Napi::Object exports);   // posix/tracker.cc: the resource tracker process (Linux)
#endif

}  // namespace mp
