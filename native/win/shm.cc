// Windows: named shared memory as file mappings backed by the paging file, exposed to JS as real
// SharedArrayBuffers (as native/posix/shm.cc does with mmap). A mapping object exists while any
// handle or view of it does, so there is nothing to unlink: shmUnlink is a no-op by design, and a
// segment disappears with the last process that maps it (no resource tracker is needed).
#include <napi.h>
#include <node.h>
#include <v8.h>

#include <cstring>
#include <memory>
#include <string>

#include "../addon.h"
#include "../errors.h"
#include "handle.h"

namespace mp {

namespace {

napi_value FromV8(v8::Local<v8::Value> local) {
  napi_value v;
  std::memcpy(static_cast<void*>(&v), &local, sizeof(v));
  return v;
}

void Unmap(void* data, size_t, void*) { ::UnmapViewOfFile(data); }

// The view becomes a SharedArrayBuffer; V8 unmaps it when the last buffer is collected. The
// mapping handle is closed at once: the view keeps the object (and its name) alive.
Napi::Value ViewToBuffer(Napi::Env env, HANDLE mapping, size_t size) {
  void* p = ::MapViewOfFile(mapping, FILE_MAP_ALL_ACCESS, 0, 0, size);
  if (p == nullptr) return ThrowErrno(env, LastSystemError(), "MapViewOfFile");
  if (size == 0) {
    MEMORY_BASIC_INFORMATION mbi;
    if (::VirtualQuery(p, &mbi, sizeof(mbi)) == 0) {
      int err = LastSystemError();
      ::UnmapViewOfFile(p);
      return ThrowErrno(env, err, "VirtualQuery");
    }
    size = mbi.RegionSize;
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  std::unique_ptr<v8::BackingStore> store = v8::SharedArrayBuffer::NewBackingStore(p, size, Unmap, nullptr);
  return Napi::Value(env, FromV8(v8::SharedArrayBuffer::New(isolate, std::move(store))));
}

// shmCreate(name, size) -> SharedArrayBuffer; EEXIST if the name is taken (exclusive create).
Napi::Value ShmCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsNumber()) return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "shmCreate(name, size)", true);
  std::string name = info[0].As<Napi::String>().Utf8Value();
  unsigned long long size = static_cast<unsigned long long>(info[1].As<Napi::Number>().Int64Value());
  if (size == 0) return ThrowCode(env, "ERR_INVALID_ARG_VALUE", "shmCreate: size must be > 0", true);
  UniqueHandle h(::CreateFileMappingW(INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE, static_cast<DWORD>(size >> 32),
                                      static_cast<DWORD>(size & 0xffffffffu), Wide(name).c_str()));
  if (!h.Valid()) return ThrowErrno(env, LastSystemError(), "CreateFileMappingW", name.c_str());
  // Race: another process created the name first; CreateFileMappingW then opens its object.
  if (::GetLastError() == ERROR_ALREADY_EXISTS) return ThrowErrno(env, LastSystemError(), "CreateFileMappingW", name.c_str());
  return ViewToBuffer(env, h.Get(), static_cast<size_t>(size));
}

// shmAttach(name) -> SharedArrayBuffer of the whole mapping (rounded up to whole pages).
Napi::Value ShmAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "shmAttach(name)", true);
  std::string name = info[0].As<Napi::String>().Utf8Value();
  UniqueHandle h(::OpenFileMappingW(FILE_MAP_ALL_ACCESS, FALSE, Wide(name).c_str()));
  if (!h.Valid()) return ThrowErrno(env, LastSystemError(), "OpenFileMappingW", name.c_str());
  return ViewToBuffer(env, h.Get(), 0);
}

Napi::Value ShmUnlink(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

}  // namespace

void InitShm(Napi::Env env, Napi::Object exports) {
  exports.Set("shmCreate", Napi::Function::New(env, ShmCreate, "shmCreate"));
  exports.Set("shmAttach", Napi::Function::New(env, ShmAttach, "shmAttach"));
  exports.Set("shmUnlink", Napi::Function::New(env, ShmUnlink, "shmUnlink"));
}

}  // namespace mp
