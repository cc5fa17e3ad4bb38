// Module entry: creates the per-environment state and lets each primitive register itself.
#include <napi.h>

#include "addon.h"

namespace mp {

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Instance data is freed by Node when this environment is torn down; each ModuleState's
  // destructor releases what its primitive still holds (threads, handles, mappings).
  env.SetInstanceData<AddonData>(new AddonData());
  InitErrors(env, exports);
  InitFunction(env, exports);
  InitWait(env, exports);
  InitShm(env, exports);
  InitSem(env, exports);
  InitPipe(env, exports);
#ifndef _WIN32
  InitFork(env, exports);
  InitFutex(env, exports);
  InitSpawn(env, exports);
  InitTracker(env, exports);
#endif
  return exports;
}

}  // namespace mp

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return mp::Init(env, exports); }

NODE_API_MODULE(multiproc, InitAddon)
