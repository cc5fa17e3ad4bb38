// RAII for Win32 HANDLEs and small helpers shared by the Windows primitives (the POSIX side has
// native/posix/fd.h). Compiled only on Windows; compile-checked here with mingw-w64.
#pragma once

#include <windows.h>

#include <string>
#include <utility>

namespace mp {

// Owns one HANDLE; closes it on scope exit unless released. Both NULL and INVALID_HANDLE_VALUE
// mean "none" (Win32 uses one or the other depending on the call).
class UniqueHandle {
 public:
  UniqueHandle() = default;
  explicit UniqueHandle(HANDLE h) : h_(h) {}
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;
  UniqueHandle(UniqueHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  UniqueHandle& operator=(UniqueHandle&& o) noexcept {
    if (this != &o) {
      Reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  ~UniqueHandle() { Reset(); }
  HANDLE Get() const { return h_; }
  bool Valid() const { return h_ != nullptr && h_ != INVALID_HANDLE_VALUE; }
  HANDLE Release() { return std::exchange(h_, nullptr); }
  void Reset(HANDLE h = nullptr) {
    if (Valid()) ::CloseHandle(h_);
    h_ = h;
  }

 private:
  HANDLE h_ = nullptr;
};

// UTF-8 (JS strings) -> UTF-16 (the W APIs).
inline std::wstring Wide(const std::string& s) {
  if (s.empty()) return std::wstring();
  int n = ::MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0);
  std::wstring w(static_cast<size_t>(n), L'\0');
  ::MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), w.data(), n);
  return w;
}

// A wait timeout in ms from JS (< 0: forever).
inline DWORD WaitMs(double ms) { return ms < 0 ? INFINITE : static_cast<DWORD>(ms > 4294967294.0 ? 4294967294.0 : ms); }

}  // namespace mp
