// Windows: named pipes carrying CPython-framed messages (4-byte big-endian length, then the body;
// -1 then an 8-byte length for 2 GiB and more), the same frames native/posix/pipe.cc writes on
// socketpairs, so lib/ frames messages alike on both. Blocking calls only: a timed receive polls
// PeekNamedPipe (1 ms steps) before its blocking read. No handle passing on Windows: a Connection
// cannot travel to a spawn child there (lib/ says so with ERR_MP_CANNOT_PASS_FD).
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../addon.h"
#include "../errors.h"
#include "handle.h"

namespace mp {

namespace {

// Per-environment: the constructor that wraps new pipe handles.
struct PipeState : ModuleState {
  Napi::FunctionReference ctor;
};

bool WriteAll(HANDLE h, const uint8_t* p, size_t n) {
  while (n > 0) {
    DWORD chunk = n > 0x40000000u ? 0x40000000u : static_cast<DWORD>(n);
    DWORD wrote = 0;
    if (!::WriteFile(h, p, chunk, &wrote, nullptr)) return false;
    p += wrote;
    n -= wrote;
  }
  return true;
}

// 1 complete, 0 EOF before the first byte, -1 error (GetLastError set).
int ReadAll(HANDLE h, uint8_t* p, size_t n) {
  bool any = false;
  while (n > 0) {
    DWORD chunk = n > 0x40000000u ? 0x40000000u : static_cast<DWORD>(n);
    DWORD got = 0;
    if (!::ReadFile(h, p, chunk, &got, nullptr)) {
      if (::GetLastError() == ERROR_BROKEN_PIPE && !any) return 0;
      return -1;
    }
    if (got == 0) return any ? -1 : 0;
    any = true;
    p += got;
    n -= got;
  }
  return 1;
}

class NamedPipe : public Napi::ObjectWrap<NamedPipe> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NamedPipe",
                       {StaticMethod("listen", &NamedPipe::Listen), StaticMethod("connect", &NamedPipe::Connect),
                        InstanceMethod("accept", &NamedPipe::Accept), InstanceMethod("send", &NamedPipe::Send),
                        InstanceMethod("recv", &NamedPipe::Recv), InstanceMethod("close", &NamedPipe::Close)});
  }

  explicit NamedPipe(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NamedPipe>(info) {}

 private:
  static Napi::Value Wrap(Napi::Env env, HANDLE h, bool server) {
    Napi::Object o = Constructor(env).New({});
    NamedPipe* self = NamedPipe::Unwrap(o);
    self->h_.Reset(h);
    self->server_ = server;
    return o;
  }

  static Napi::FunctionReference& Constructor(Napi::Env env) {
    return GetAddonData(env)->Get<PipeState>(AddonData::kPipe)->ctor;
  }

  // NamedPipe.listen(name): one server instance of \\.\pipe\<name>, not yet connected.
  static Napi::Value Listen(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "NamedPipe.listen(name)", true);
    std::string name = info[0].As<Napi::String>().Utf8Value();
    HANDLE h = ::CreateNamedPipeW(Wide("\\\\.\\pipe\\" + name).c_str(), PIPE_ACCESS_DUPLEX | FILE_FLAG_FIRST_PIPE_INSTANCE,
                                  PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS, 1, 64 * 1024,
                                  64 * 1024, 0, nullptr);
    if (h == INVALID_HANDLE_VALUE) return ThrowErrno(env, LastSystemError(), "CreateNamedPipeW", name.c_str());
    return Wrap(env, h, true);
  }

  // NamedPipe.connect(name, timeoutMs): the client end.
  static Napi::Value Connect(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "NamedPipe.connect(name, timeoutMs)", true);
    std::string name = info[0].As<Napi::String>().Utf8Value();
    std::wstring path = Wide("\\\\.\\pipe\\" + name);
    DWORD wait = WaitMs(info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1);
    // Race: the server's single instance may be busy or not created yet; WaitNamedPipeW waits
    // for it (NMPWAIT_WAIT_FOREVER is INFINITE), then CreateFileW can still lose to another client.
    if (!::WaitNamedPipeW(path.c_str(), wait)) return ThrowErrno(env, LastSystemError(), "WaitNamedPipeW", name.c_str());
    HANDLE h = ::CreateFileW(path.c_str(), GENERIC_READ | GENERIC_WRITE, 0, nullptr, OPEN_EXISTING, 0, nullptr);
    if (h == INVALID_HANDLE_VALUE) return ThrowErrno(env, LastSystemError(), "CreateFileW", name.c_str());
    return Wrap(env, h, false);
  }

  bool Check(Napi::Env env) {
    if (h_.Valid()) return true;
    ThrowCode(env, "ERR_MP_CLOSED", "the pipe is closed");
    return false;
  }

  // accept(): blocks until a client connects to this server instance.
  Napi::Value Accept(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Check(env)) return env.Undefined();
    if (!server_) return ThrowCode(env, "ERR_INVALID_STATE", "accept() on a client end");
    // A client may connect between CreateNamedPipeW and here: ERROR_PIPE_CONNECTED is success.
    if (!::ConnectNamedPipe(h_.Get(), nullptr) && ::GetLastError() != ERROR_PIPE_CONNECTED) {
      return ThrowErrno(env, LastSystemError(), "ConnectNamedPipe");
    }
    return env.Undefined();
  }

  // send(bytes): one frame.
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Check(env)) return env.Undefined();
    if (!info[0].IsTypedArray()) return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "send(bytes)", true);
    Napi::Uint8Array b = info[0].As<Napi::Uint8Array>();
    uint64_t n = b.ByteLength();
    uint8_t head[12];
    size_t hn;
    if (n < 0x7fffffffu) {
      for (int i = 0; i < 4; i++) head[i] = static_cast<uint8_t>(n >> (24 - 8 * i));
      hn = 4;
    } else {
      head[0] = head[1] = head[2] = head[3] = 0xff;
      for (int i = 0; i < 8; i++) head[4 + i] = static_cast<uint8_t>(n >> (56 - 8 * i));
      hn = 12;
    }
    if (!WriteAll(h_.Get(), head, hn) || !WriteAll(h_.Get(), b.Data(), static_cast<size_t>(n))) {
      return ThrowErrno(env, LastSystemError(), "WriteFile");
    }
    return env.Undefined();
  }

  // recv(timeoutMs) -> Buffer (a frame), null on timeout, false at EOF.
  Napi::Value Recv(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Check(env)) return env.Undefined();
    double ms = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    if (ms >= 0) {
      ULONGLONG until = ::GetTickCount64() + static_cast<ULONGLONG>(ms);
      for (;;) {
        DWORD avail = 0;
        if (!::PeekNamedPipe(h_.Get(), nullptr, 0, nullptr, &avail, nullptr)) {
          if (::GetLastError() == ERROR_BROKEN_PIPE) return Napi::Boolean::New(env, false);
          return ThrowErrno(env, LastSystemError(), "PeekNamedPipe");
        }
        if (avail > 0) break;
        if (::GetTickCount64() >= until) return env.Null();
        ::Sleep(1);
      }
    }
    uint8_t head[4];
    int r = ReadAll(h_.Get(), head, 4);
    if (r == 0) return Napi::Boolean::New(env, false);
    if (r < 0) return ThrowErrno(env, LastSystemError(), "ReadFile");
    uint64_t n = (uint64_t{head[0]} << 24) | (uint64_t{head[1]} << 16) | (uint64_t{head[2]} << 8) | head[3];
    if (n == 0xffffffffu) {
      uint8_t big[8];
      if (ReadAll(h_.Get(), big, 8) != 1) return ThrowErrno(env, LastSystemError(), "ReadFile");
      n = 0;
      for (int i = 0; i < 8; i++) n = (n << 8) | big[i];
    }
    Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, static_cast<size_t>(n));
    if (n > 0 && ReadAll(h_.Get(), out.Data(), static_cast<size_t>(n)) != 1) return ThrowErrno(env, LastSystemError(), "ReadFile");
    return out;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (server_ && h_.Valid()) ::DisconnectNamedPipe(h_.Get());
    h_.Reset();
    return info.Env().Undefined();
  }

  UniqueHandle h_;
  bool server_ = false;
};

}  // namespace

void InitPipe(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = NamedPipe::Define(env);
  auto state = std::make_unique<PipeState>();
  state->ctor = Napi::Persistent(ctor);
  GetAddonData(env)->slots[AddonData::kPipe] = std::move(state);
  exports.Set("NamedPipe", ctor);
}

}  // namespace mp
