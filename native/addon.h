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

// Module initialisers: each adds its functions to `exports`.
void InitErrors(Napi::Env env, Napi::Object exports);  // errors.cc
void InitFork(Napi::Env env, Napi::Object exports);    // fork.cc: fork + child fix-ups
void InitWait(Napi::Env env, Napi::Object exports);    // wait.cc: exit watching, waitpid, kill

void InitShm(Napi::Env env, Napi::Object exports);     // shm.cc: shm_open/mmap, SharedArrayBuffers
void InitFutex(Napi::Env env, Napi::Object exports);   // futex.cc: cross-process waits on shared words

void InitSem(Napi::Env env, Napi::Object exports);     // sem.cc: named POSIX semaphores
void InitPipe(Napi::Env env, Napi::Object exports);    // pipe.cc: pipes, socketpair, fd passing

void InitFunction(Napi::Env env, Napi::Object exports);  // function.cc: where a function was defined
void InitSpawn(Napi::Env env, Napi::Object exports);     // spawn.cc: posix_spawn of a fresh program

}  // namespace mp
