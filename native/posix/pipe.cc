// Pipes, socket pairs and descriptor plumbing (pipe2, socketpair, close, dup2, O_NONBLOCK,
// CLOEXEC), plus what Connection/Listener need on top:
//   - frame I/O: CPython's framing (4-byte big-endian signed length; -1 then an 8-byte length
//     for messages of 2 GiB and more), written whole with writev/sendmsg, read back one frame
//     at a time by a FrameReader that never reads past the end of the current frame (so the
//     stream stays exactly where CPython's would be, and another reader of the same fd —
//     a child process — is never robbed of bytes);
//   - SCM_RIGHTS descriptor passing attached to a frame;
//   - poll() (EINTR-safe, deadline kept across retries);
//   - Watcher: a uv_poll_t on the Node event loop, so async reads/accepts/connects never use
//     the libuv thread pool;
//   - Unix/TCP listen, accept, non-blocking connect.
// Policy (what a frame contains, authentication, timeouts) lives in lib/connection.ts.
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "../addon.h"
#include "../errors.h"
#include "fd.h"
#include "fork.h"

namespace mp {

[[maybe_unused]] static bool SetCloexec(int fd) {
  int flags = fcntl(fd, F_GETFD);
  return flags >= 0 && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == 0;
}

static bool SetNonBlock(int fd, bool on) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return false;
  int want = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  return want == flags || fcntl(fd, F_SETFL, want) == 0;
}

// The bytes of a typed array, also when it views a SharedArrayBuffer (TypedArray::ArrayBuffer()
// cannot describe those; napi_get_typedarray_info gives the data pointer for both).
static char* TypedData(Napi::TypedArray t) {
  void* data = nullptr;
  if (napi_get_typedarray_info(t.Env(), t, nullptr, nullptr, &data, nullptr, nullptr) != napi_ok) return nullptr;
  return static_cast<char*>(data);
}

static int FdArg(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Int32Value(); }

static Napi::Value PairToArray(Napi::Env env, UniqueFd& a, UniqueFd& b) {
  Napi::Array arr = Napi::Array::New(env, 2);
  arr.Set(0u, Napi::Number::New(env, a.Release()));
  arr.Set(1u, Napi::Number::New(env, b.Release()));
  return arr;
}

static int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// poll() that survives EINTR without stretching the timeout: the deadline is fixed on entry
// and the remaining time recomputed after each interruption. timeoutMs < 0 waits forever.
static int PollDeadline(struct pollfd* fds, nfds_t n, int64_t timeoutMs) {
  int64_t deadline = timeoutMs < 0 ? -1 : NowMs() + timeoutMs;
  for (;;) {
    int wait = -1;
    if (deadline >= 0) {
      int64_t left = deadline - NowMs();
      wait = left <= 0 ? 0 : (left > INT32_MAX ? INT32_MAX : int(left));
    }
    int r = poll(fds, n, wait);
    if (r >= 0 || errno != EINTR) return r;
  }
}

// pipe() -> [readFd, writeFd], both close-on-exec (a forked child inherits them; an exec'd
// program does not, unless dup2'd).
static Napi::Value Pipe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
#ifdef __linux__
  if (pipe2(fds, O_CLOEXEC) < 0) return ThrowErrno(env, errno, "pipe");
  UniqueFd r(fds[0]), w(fds[1]);
#else
  // Race: without pipe2 another thread could fork+exec between pipe() and FD_CLOEXEC; this
  // addon never execs from another thread, and child_process sets CLOEXEC-independent fds.
  if (pipe(fds) < 0) return ThrowErrno(env, errno, "pipe");
  UniqueFd r(fds[0]), w(fds[1]);
  if (!SetCloexec(r.Get()) || !SetCloexec(w.Get())) return ThrowErrno(env, errno, "fcntl");
#endif
  return PairToArray(env, r, w);
}

// socketpair() -> [a, b]: a connected AF_UNIX stream pair, close-on-exec.
static Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
#ifdef SOCK_CLOEXEC
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) return ThrowErrno(env, errno, "socketpair");
  UniqueFd a(fds[0]), b(fds[1]);
#else
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0) return ThrowErrno(env, errno, "socketpair");
  UniqueFd a(fds[0]), b(fds[1]);
  if (!SetCloexec(a.Get()) || !SetCloexec(b.Get())) return ThrowErrno(env, errno, "fcntl");
#endif
  return PairToArray(env, a, b);
}

static Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (close(fd) < 0 && errno != EINTR) return ThrowErrno(env, errno, "close");
  return env.Undefined();
}

// dup2(oldfd, newfd) -> newfd. The new descriptor is not close-on-exec (as dup2 in C).
static Napi::Value Dup2(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int a = FdArg(info, 0), b = FdArg(info, 1);
  int r = RetryEintr([&] { return dup2(a, b); });
  if (r < 0) return ThrowErrno(env, errno, "dup2");
  return Napi::Number::New(env, r);
}

// dup(fd) -> a new close-on-exec descriptor for the same open file.
static Napi::Value Dup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int r = fcntl(FdArg(info, 0), F_DUPFD_CLOEXEC, 0);
  if (r < 0) return ThrowErrno(env, errno, "dup");
  return Napi::Number::New(env, r);
}

// setBlocking(fd, blocking)
static Napi::Value SetBlocking(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!SetNonBlock(FdArg(info, 0), !info[1].ToBoolean().Value())) return ThrowErrno(env, errno, "fcntl");
  return env.Undefined();
}

// fdKind(fd) -> 'socket' | 'fifo' | 'other'; throws EBADF for a closed descriptor.
static Napi::Value FdKind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct stat st;
  if (fstat(FdArg(info, 0), &st) < 0) return ThrowErrno(env, errno, "fstat");
  const char* k = S_ISSOCK(st.st_mode) ? "socket" : S_ISFIFO(st.st_mode) ? "fifo" : "other";
  return Napi::String::New(env, k);
}

// ---------------------------------------------------------------- poll

// pollFds(fds: number[], timeoutMs) -> number[]: the subset of fds that are readable, at EOF
// or in error (POLLIN|POLLHUP|POLLERR|POLLNVAL), waiting up to timeoutMs (< 0: forever).
static Napi::Value PollFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array in = info[0].As<Napi::Array>();
  int64_t timeout = info[1].As<Napi::Number>().Int64Value();
  std::vector<struct pollfd> p(in.Length());
  for (uint32_t i = 0; i < p.size(); i++) {
    p[i].fd = in.Get(i).As<Napi::Number>().Int32Value();
    p[i].events = POLLIN;
    p[i].revents = 0;
  }
  int r = PollDeadline(p.data(), p.size(), timeout);
  if (r < 0) return ThrowErrno(env, errno, "poll");
  Napi::Array out = Napi::Array::New(env);
  uint32_t k = 0;
  for (auto& q : p)
    if (q.revents) out.Set(k++, Napi::Number::New(env, q.fd));
  return out;
}

// ---------------------------------------------------------------- frame writing

// Writes iov fully. A descriptor someone made non-blocking is waited on with poll(POLLOUT).
// Sockets use sendmsg(MSG_NOSIGNAL) so a closed peer is EPIPE, never SIGPIPE. `fds` (if any)
// ride as SCM_RIGHTS with the first bytes sent, i.e. with the frame header, so the reader
// collects them while reading that frame.
static int WriteAllV(int fd, bool sock, struct iovec* iov, int iovcnt, const std::vector<int>& fds) {
  bool fdsPending = !fds.empty();
  std::vector<char> cbuf;
  while (iovcnt > 0) {
    ssize_t n;
    if (sock) {
      struct msghdr msg;
      memset(&msg, 0, sizeof msg);
      msg.msg_iov = iov;
      msg.msg_iovlen = iovcnt;
      if (fdsPending) {
        size_t len = sizeof(int) * fds.size();
        cbuf.assign(CMSG_SPACE(len), 0);
        msg.msg_control = cbuf.data();
        msg.msg_controllen = cbuf.size();
        struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(len);
        memcpy(CMSG_DATA(c), fds.data(), len);
      }
#ifdef MSG_NOSIGNAL
      n = sendmsg(fd, &msg, MSG_NOSIGNAL);
#else
      n = sendmsg(fd, &msg, 0);
#endif
    } else {
      n = writev(fd, iov, iovcnt > IOV_MAX ? IOV_MAX : iovcnt);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        struct pollfd p = {fd, POLLOUT, 0};
        if (PollDeadline(&p, 1, -1) < 0) return -1;
        continue;
      }
      return -1;
    }
    fdsPending = false;  // the kernel took them with the first byte(s)
    size_t left = size_t(n);
    while (iovcnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return 0;
}

// Encodes CPython's header for a body of `len` bytes into h; returns the header size.
static size_t EncodeHeader(uint8_t* h, uint64_t len) {
  if (len <= 0x7fffffff) {
    h[0] = uint8_t(len >> 24), h[1] = uint8_t(len >> 16), h[2] = uint8_t(len >> 8), h[3] = uint8_t(len);
    return 4;
  }
  memset(h, 0xff, 4);
  for (int i = 0; i < 8; i++) h[4 + i] = uint8_t(len >> (56 - 8 * i));
  return 12;
}

// The iovecs of one frame: CPython's header (written into hdr) then the chunks, uncopied.
static std::vector<struct iovec> FrameIov(Napi::Array chunks, uint8_t* hdr) {
  uint32_t n = chunks.Length();
  std::vector<struct iovec> iov(n + 1);
  uint64_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    Napi::TypedArray t = chunks.Get(i).As<Napi::TypedArray>();
    iov[i + 1].iov_base = TypedData(t);
    iov[i + 1].iov_len = t.ByteLength();
    total += t.ByteLength();
  }
  iov[0].iov_base = hdr;
  iov[0].iov_len = EncodeHeader(hdr, total);
  return iov;
}

// sendFrame(fd, isSocket, chunks: Uint8Array[], fds?: number[]): writes one frame whose body
// is the concatenation of chunks (a tag byte and a payload travel without being joined in JS).
static Napi::Value SendFrame(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  bool sock = info[1].ToBoolean().Value();
  Napi::Array chunks = info[2].As<Napi::Array>();
  std::vector<int> fds;
  if (info.Length() > 3 && info[3].IsArray()) {
    Napi::Array a = info[3].As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) fds.push_back(a.Get(i).As<Napi::Number>().Int32Value());
  }
  uint8_t hdr[12];
  std::vector<struct iovec> iov = FrameIov(chunks, hdr);
  if (WriteAllV(fd, sock, iov.data(), int(iov.size()), fds) < 0) return ThrowErrno(env, errno, sock ? "sendmsg" : "write");
  return env.Undefined();
}

// One sendmsg that never blocks (MSG_DONTWAIT: the descriptor's own mode is untouched) nor
// raises SIGPIPE: the bytes written, 0 when the socket buffer is full.
static Napi::Value SendNow(Napi::Env env, int fd, struct iovec* iov, size_t iovcnt) {
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = iovcnt > IOV_MAX ? IOV_MAX : iovcnt;
  int flags = MSG_DONTWAIT;
#ifdef MSG_NOSIGNAL
  flags |= MSG_NOSIGNAL;
#endif
  ssize_t n = RetryEintr([&] { return sendmsg(fd, &msg, flags); });
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, 0);
    return ThrowErrno(env, errno, "sendmsg");
  }
  return Napi::Number::New(env, double(n));
}

// writeSome(fd, bytes, offset) -> bytes written now: a non-blocking send of bytes[offset..] on a
// socket (MSG_DONTWAIT: the descriptor's own mode is untouched), 0 when the socket buffer is
// full. For a sender that must never block (the pool's parent: a blocked write while the worker
// blocks writing results to it would deadlock): it queues the rest and waits for writability.
static Napi::Value WriteSome(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (!info[1].IsTypedArray() || !info[2].IsNumber()) return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "writeSome(fd, bytes, offset)", true);
  Napi::TypedArray t = info[1].As<Napi::TypedArray>();
  size_t off = size_t(info[2].As<Napi::Number>().Int64Value());
  if (off > t.ByteLength()) return ThrowCode(env, "ERR_OUT_OF_RANGE", "writeSome: offset beyond the end", true);
  struct iovec one = {static_cast<char*>(TypedData(t)) + off, t.ByteLength() - off};
  return SendNow(env, fd, &one, 1);
}

// trySendFrame(fd, chunks) -> bytes of the frame (header + chunks) written now, without
// blocking (sendmsg MSG_DONTWAIT): the whole frame in the common case, else what fit (the caller
// queues the rest and continues with writeSome).
static Napi::Value TrySendFrame(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Napi::Array chunks = info[1].As<Napi::Array>();
  uint8_t hdr[12];
  std::vector<struct iovec> iov = FrameIov(chunks, hdr);
  return SendNow(env, fd, iov.data(), iov.size());
}

// frameHeader(length) -> the CPython header for a body of that many bytes.
static Napi::Value FrameHeader(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t h[12];
  size_t n = EncodeHeader(h, uint64_t(info[0].As<Napi::Number>().Int64Value()));
  return Napi::Buffer<uint8_t>::Copy(env, h, n);
}

// ---------------------------------------------------------------- frame reading

// FrameReader(fd, isSocket): reads CPython frames from fd one at a time.
//   tryRead(maxLength)  never blocks   -> Buffer | null (incomplete) | false (EOF) | number
//   readSync(timeoutMs, maxLength)     -> same, null meaning timed out
// A number is returned when the announced length exceeds maxLength (>= 0): the header stays
// consumed and the body unread, so a later read without a limit still returns that message.
// takeFds() hands over the descriptors that arrived with the last complete frame.
class FrameReader : public Napi::ObjectWrap<FrameReader> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FrameReader",
                       {InstanceMethod<&FrameReader::TryRead>("tryRead"),
                        InstanceMethod<&FrameReader::ReadSync>("readSync"),
                        InstanceMethod<&FrameReader::TakeFds>("takeFds"),
                        InstanceMethod<&FrameReader::Partial>("partial"),
                        InstanceMethod<&FrameReader::Dispose>("dispose")});
  }

  FrameReader(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FrameReader>(info) {
    fd_ = FdArg(info, 0);
    sock_ = info[1].ToBoolean().Value();
  }
  ~FrameReader() override { Reset(); }

 private:
  enum Step { kDone, kAgain, kEof, kTooLong, kError };
  static constexpr size_t kSmall = 64 * 1024;

  void CloseFds(std::vector<int>& v) {
    for (int f : v) close(f);
    v.clear();
  }
  void Reset() {
    free(big_);
    big_ = nullptr;
    CloseFds(fds_);
    CloseFds(doneFds_);
    hdrGot_ = 0, hdrNeed_ = 4, haveLen_ = false, got_ = 0;
  }

  // One read of at most n bytes into p. Returns bytes read, 0 at EOF, -1 with errno (EAGAIN
  // when nothing is there now). Non-blocking unless `block` (a Sync read without timeout: one
  // blocking recvmsg/read instead of recvmsg + poll + recvmsg; on a descriptor someone made
  // O_NONBLOCK it still returns EAGAIN and the caller polls).
  ssize_t ReadSome(char* p, size_t n, bool block) {
    if (sock_) {
      struct iovec iov = {p, n};
      struct msghdr msg;
      memset(&msg, 0, sizeof msg);
      alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 64)];
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = cbuf;
      msg.msg_controllen = sizeof cbuf;
      int flags = block ? 0 : MSG_DONTWAIT;
#ifdef MSG_CMSG_CLOEXEC
      flags |= MSG_CMSG_CLOEXEC;
#endif
      ssize_t r = RetryEintr([&] { return recvmsg(fd_, &msg, flags); });
      if (r < 0) return r;
      for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int* a = reinterpret_cast<int*>(CMSG_DATA(c));
        for (size_t i = 0; i < cnt; i++) {
          int f;
          memcpy(&f, a + i, sizeof f);
#ifndef MSG_CMSG_CLOEXEC
          SetCloexec(f);
#endif
          fds_.push_back(f);
        }
      }
      if (msg.msg_flags & MSG_CTRUNC) {
        errno = EMSGSIZE;  // more descriptors than we take in one frame: refuse the frame
        return -1;
      }
      return r;
    }
    // A pipe (or tty): there is no MSG_DONTWAIT and the descriptor may be blocking and shared
    // with other processes, so read only what FIONREAD says is there. With nothing there, a
    // zero-timeout poll tells EOF (POLLHUP) from "nothing yet"; read() then returns 0 at EOF
    // or bytes that raced in, and cannot block in either case.
    if (block) return RetryEintr([&] { return read(fd_, p, n); });
    int avail = 0;
    if (ioctl(fd_, FIONREAD, &avail) < 0) return -1;
    if (avail <= 0) {
      struct pollfd q = {fd_, POLLIN, 0};
      int pr = RetryEintr([&] { return poll(&q, 1, 0); });
      if (pr < 0) return -1;
      if (pr == 0) {
        errno = EAGAIN;
        return -1;
      }
      avail = int(n < 1 ? 1 : (n > 65536 ? 65536 : n));
    }
    size_t want = size_t(avail) < n ? size_t(avail) : n;
    return RetryEintr([&] { return read(fd_, p, want); });
  }

  // Advances the current frame as far as the data available now allows.
  Step Advance(int64_t maxLength, bool block = false) {
    for (;;) {
      if (!haveLen_) {
        ssize_t r = ReadSome(reinterpret_cast<char*>(hdr_) + hdrGot_, hdrNeed_ - hdrGot_, block);
        if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? kAgain : kError;
        if (r == 0) {
          if (hdrGot_ == 0) return kEof;
          errno = 0;
          return kEof;  // EOF inside a header: the message is lost, report EOF
        }
        hdrGot_ += size_t(r);
        if (hdrGot_ < hdrNeed_) continue;
        if (hdrNeed_ == 4) {
          int32_t s = int32_t((uint32_t(hdr_[0]) << 24) | (uint32_t(hdr_[1]) << 16) | (uint32_t(hdr_[2]) << 8) | hdr_[3]);
          if (s == -1) {
            hdrNeed_ = 12;
            continue;
          }
          if (s < 0) {
            errno = EPROTO;
            return kError;
          }
          len_ = uint64_t(s);
        } else {
          len_ = 0;
          for (int i = 0; i < 8; i++) len_ = (len_ << 8) | hdr_[4 + i];
        }
        haveLen_ = true;
        got_ = 0;
      }
      if (maxLength >= 0 && len_ > uint64_t(maxLength)) return kTooLong;
      if (len_ > kSmall && big_ == nullptr) {
        big_ = static_cast<char*>(malloc(len_));
        if (big_ == nullptr) {
          errno = ENOMEM;
          return kError;
        }
      }
      if (!small_) small_.reset(new char[kSmall]);
      char* dst = len_ > kSmall ? big_ : small_.get();
      while (got_ < len_) {
        ssize_t r = ReadSome(dst + got_, len_ - got_, block);
        if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? kAgain : kError;
        if (r == 0) return kEof;  // peer closed mid-frame
        got_ += size_t(r);
      }
      return kDone;
    }
  }

  // Turns a finished step into the JS result and resets the frame state.
  Napi::Value Finish(Napi::Env env, Step s) {
    switch (s) {
      case kAgain:
        return env.Null();
      case kTooLong:
        return Napi::Number::New(env, double(len_));
      case kEof: {
        Reset();
        return Napi::Boolean::New(env, false);
      }
      case kError: {
        int e = errno;
        Reset();  // a broken stream cannot be resynchronised; drop the partial frame
        return ThrowErrno(env, e, sock_ ? "recvmsg" : "read");
      }
      case kDone:
        break;
    }
    Napi::Value out;
    if (len_ > kSmall) {
      char* p = big_;
      big_ = nullptr;
      out = Napi::Buffer<char>::New(env, p, len_, [](Napi::Env, char* d) { free(d); });
    } else {
      out = Napi::Buffer<char>::Copy(env, small_.get(), len_);
    }
    CloseFds(doneFds_);  // unclaimed descriptors of an earlier frame
    doneFds_.swap(fds_);
    hdrGot_ = 0, hdrNeed_ = 4, haveLen_ = false, got_ = 0;
    return out;
  }

  static int64_t MaxLen(const Napi::CallbackInfo& info, size_t i) {
    return info.Length() > i && info[i].IsNumber() ? info[i].As<Napi::Number>().Int64Value() : -1;
  }

  Napi::Value TryRead(const Napi::CallbackInfo& info) { return Finish(info.Env(), Advance(MaxLen(info, 0))); }

  Napi::Value ReadSync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int64_t timeout = info[0].As<Napi::Number>().Int64Value();
    int64_t maxLength = MaxLen(info, 1);
    int64_t deadline = timeout < 0 ? -1 : NowMs() + timeout;
    for (;;) {
      Step s = Advance(maxLength, deadline < 0);
      if (s != kAgain) return Finish(env, s);
      int64_t left = deadline < 0 ? -1 : deadline - NowMs();
      if (deadline >= 0 && left <= 0) return env.Null();
      struct pollfd q = {fd_, POLLIN, 0};
      if (PollDeadline(&q, 1, left) < 0) return ThrowErrno(env, errno, "poll");
    }
  }

  Napi::Value TakeFds(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array a = Napi::Array::New(env, doneFds_.size());
    for (uint32_t i = 0; i < doneFds_.size(); i++) a.Set(i, Napi::Number::New(env, doneFds_[i]));
    doneFds_.clear();
    return a;
  }

  // True while a frame has begun arriving but is not complete.
  Napi::Value Partial(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), hdrGot_ > 0); }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Reset();
    return info.Env().Undefined();
  }

  int fd_ = -1;
  bool sock_ = false;
  uint8_t hdr_[12];
  size_t hdrGot_ = 0, hdrNeed_ = 4;
  bool haveLen_ = false;
  uint64_t len_ = 0, got_ = 0;
  std::unique_ptr<char[]> small_;  // reused for frames up to kSmall, allocated on first use
  char* big_ = nullptr;
  std::vector<int> fds_, doneFds_;
};

// ---------------------------------------------------------------- event-loop watcher

// Watcher(fd, callback(events)): a uv_poll_t on this environment's loop. start(events) with
// 1 = readable, 2 = writable; stop(); close(). The callback gets the ready events, or a
// negative errno if polling failed. While started, the watcher keeps the loop (and itself)
// alive, as a pending socket read does.
//
// Races defended:
//  - uv_close is asynchronous: the uv handle lives in its own heap block that the close
//    callback frees, so a GC'd or closed Watcher never leaves libuv with a dangling pointer.
//  - A forked child inherits started handles (uv_loop_fork re-arms them): a watcher fires
//    only in the process that last started it, so a child never consumes the parent's
//    messages for a read the parent had pending; the child's own start() takes it over.
//  - libuv allows one poll handle per fd and loop: JS gives each Connection one Watcher and
//    dup()s raw descriptors before watching them.
class Watcher : public Napi::ObjectWrap<Watcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Watcher",
                       {InstanceMethod<&Watcher::Start>("start"), InstanceMethod<&Watcher::Stop>("stop"),
                        InstanceMethod<&Watcher::SetRef>("setRef"),
                        InstanceMethod<&Watcher::CloseJs>("close")});
  }

  Watcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Watcher>(info), ctx_(info.Env(), "multiproc.Watcher") {
    Napi::Env env = info.Env();
    int fd = FdArg(info, 0);
    cb_ = Napi::Persistent(info[1].As<Napi::Function>());
    pid_ = getpid();
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      ThrowCode(env, "ERR_MP_NO_EVENT_LOOP", "no libuv event loop in this environment");
      return;
    }
    h_ = new Handle();
    h_->owner = this;
    int r = uv_poll_init(loop, &h_->poll, fd);
    if (r < 0) {
      delete h_;
      h_ = nullptr;
      ThrowErrno(env, -r, "uv_poll_init");
      return;
    }
    h_->poll.data = h_;
  }

  ~Watcher() override { CloseHandle(); }

 private:
  struct Handle {
    uv_poll_t poll;
    Watcher* owner;
  };

  void CloseHandle() {
    if (h_ == nullptr) return;
    h_->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&h_->poll), [](uv_handle_t* p) { delete static_cast<Handle*>(p->data); });
    h_ = nullptr;
    if (refd_) {
      refd_ = false;
      // Unref from a destructor is not allowed (the object is going away); from close() it is.
    }
  }

  static void OnPoll(uv_poll_t* p, int status, int events) {
    Watcher* w = static_cast<Handle*>(p->data)->owner;
    if (w == nullptr) return;
    if (getpid() != w->pid_) {
      uv_poll_stop(p);
      return;
    }
    Napi::Env env = w->Env();
    Napi::HandleScope scope(env);
    int ev = status < 0 ? status : ((events & UV_READABLE) ? 1 : 0) | ((events & UV_WRITABLE) ? 2 : 0) |
                                       ((events & UV_DISCONNECT) ? 1 : 0);
    napi_value argv[1] = {Napi::Number::New(env, ev)}, result;
    // Raw napi_make_callback: node-addon-api's wrapper turns any failure into a throw, which is
    // fatal when JS cannot run any more (an unref'd, still-armed watcher can fire in the last
    // loop turns of environment teardown; then nothing is pending and nothing is reported).
    napi_status st = napi_make_callback(env, w->ctx_, w->Value(), w->cb_.Value(), 1, argv, &result);
    // A Process child forked inside this callback unwinds it by termination: not an error.
    // The watcher object may already be gone in the child: touch nothing after the call.
    if (st != napi_ok) ReportCallbackFailure(env);
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (h_ == nullptr) return ThrowCode(env, "ERR_MP_CLOSED", "watcher is closed");
    int want = info[0].As<Napi::Number>().Int32Value();
    int ev = ((want & 1) ? UV_READABLE | UV_DISCONNECT : 0) | ((want & 2) ? UV_WRITABLE : 0);
    pid_ = getpid();  // a forked child that starts an inherited watcher now owns it
    int r = uv_poll_start(&h_->poll, ev, OnPoll);
    if (r < 0) return ThrowErrno(env, -r, "uv_poll_start");
    // A forked child's loop quieting unrefs inherited handles: a watcher started again in the
    // child must keep the child alive while its read is pending.
    uv_ref(reinterpret_cast<uv_handle_t*>(&h_->poll));
    if (!refd_) {
      Ref();
      refd_ = true;
    }
    return env.Undefined();
  }

  // setRef(false): the started watcher no longer keeps the loop alive (an idle watcher kept
  // armed between reads saves two epoll_ctl calls per message); setRef(true) undoes it.
  Napi::Value SetRef(const Napi::CallbackInfo& info) {
    if (h_ != nullptr) {
      if (info[0].ToBoolean().Value()) uv_ref(reinterpret_cast<uv_handle_t*>(&h_->poll));
      else uv_unref(reinterpret_cast<uv_handle_t*>(&h_->poll));
    }
    return info.Env().Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (h_ != nullptr) uv_poll_stop(&h_->poll);
    if (refd_) {
      refd_ = false;
      Unref();
    }
    return info.Env().Undefined();
  }

  Napi::Value CloseJs(const Napi::CallbackInfo& info) {
    if (h_ != nullptr) uv_poll_stop(&h_->poll);
    if (refd_) {
      refd_ = false;
      Unref();
    }
    CloseHandle();
    return info.Env().Undefined();
  }

  Napi::FunctionReference cb_;
  Napi::AsyncContext ctx_;
  Handle* h_ = nullptr;
  pid_t pid_ = 0;
  bool refd_ = false;
};

// ---------------------------------------------------------------- sockets

union SockAddr {
  struct sockaddr sa;
  struct sockaddr_un un;
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
  struct sockaddr_storage ss;
};

// Fills `a` from (family, host-or-path, port). Returns its length, 0 after throwing.
static socklen_t MakeAddr(Napi::Env env, const std::string& family, const std::string& host, int port, SockAddr* a,
                          int* domain) {
  memset(a, 0, sizeof *a);
  if (family == "AF_UNIX") {
    if (host.size() + 1 > sizeof a->un.sun_path) {
      ThrowErrno(env, ENAMETOOLONG, "bind", host.c_str());
      return 0;
    }
    a->un.sun_family = AF_UNIX;
    memcpy(a->un.sun_path, host.c_str(), host.size() + 1);
    *domain = AF_UNIX;
    return socklen_t(offsetof(struct sockaddr_un, sun_path) + host.size() + 1);
  }
  struct addrinfo hints, *res = nullptr;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = family == "AF_INET6" ? AF_INET6 : AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  std::string svc = std::to_string(port);
  int r = getaddrinfo(host.c_str(), svc.c_str(), &hints, &res);
  if (r != 0 || res == nullptr) {
    ThrowCode(env, "ENOTFOUND", std::string("getaddrinfo ENOTFOUND ") + host + ": " + gai_strerror(r));
    return 0;
  }
  socklen_t len = res->ai_addrlen;
  memcpy(a, res->ai_addr, len);
  *domain = res->ai_family;
  freeaddrinfo(res);
  return len;
}

static UniqueFd NewSocket(int domain, bool nonblock) {
  int type = SOCK_STREAM;
#ifdef SOCK_CLOEXEC
  type |= SOCK_CLOEXEC;
#endif
  UniqueFd fd(socket(domain, type, 0));
#ifndef SOCK_CLOEXEC
  if (fd.Valid()) SetCloexec(fd.Get());
#endif
  if (fd.Valid() && nonblock && !SetNonBlock(fd.Get(), true)) fd.Reset();
  return fd;
}

static Napi::Value AddrToJs(Napi::Env env, const SockAddr& a) {
  Napi::Object o = Napi::Object::New(env);
  if (a.sa.sa_family == AF_UNIX) {
    o.Set("family", "AF_UNIX");
    o.Set("path", Napi::String::New(env, a.un.sun_path));
  } else {
    char buf[INET6_ADDRSTRLEN] = {0};
    int port;
    if (a.sa.sa_family == AF_INET) {
      inet_ntop(AF_INET, &a.in4.sin_addr, buf, sizeof buf);
      port = ntohs(a.in4.sin_port);
      o.Set("family", "AF_INET");
    } else {
      inet_ntop(AF_INET6, &a.in6.sin6_addr, buf, sizeof buf);
      port = ntohs(a.in6.sin6_port);
      o.Set("family", "AF_INET6");
    }
    o.Set("host", Napi::String::New(env, buf));
    o.Set("port", Napi::Number::New(env, port));
  }
  return o;
}

// listen(family, hostOrPath, port, backlog) -> { fd, address }. The listening socket is
// non-blocking (accept is driven by a Watcher) and close-on-exec; TCP sets SO_REUSEADDR as
// CPython does.
static Napi::Value Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string family = info[0].As<Napi::String>().Utf8Value();
  std::string host = info[1].As<Napi::String>().Utf8Value();
  int port = info[2].As<Napi::Number>().Int32Value();
  int backlog = info[3].As<Napi::Number>().Int32Value();
  SockAddr a;
  int domain = 0;
  socklen_t len = MakeAddr(env, family, host, port, &a, &domain);
  if (len == 0) return env.Undefined();
  UniqueFd fd = NewSocket(domain, true);
  if (!fd.Valid()) return ThrowErrno(env, errno, "socket");
  if (domain != AF_UNIX) {
    int one = 1;
    setsockopt(fd.Get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  if (bind(fd.Get(), &a.sa, len) < 0) return ThrowErrno(env, errno, "bind", domain == AF_UNIX ? host.c_str() : nullptr);
  if (listen(fd.Get(), backlog) < 0) return ThrowErrno(env, errno, "listen");
  SockAddr bound;
  socklen_t blen = sizeof bound;
  memset(&bound, 0, sizeof bound);
  if (getsockname(fd.Get(), &bound.sa, &blen) < 0) return ThrowErrno(env, errno, "getsockname");
  Napi::Object o = Napi::Object::New(env);
  o.Set("address", AddrToJs(env, bound));
  o.Set("fd", Napi::Number::New(env, fd.Release()));
  return o;
}

// accept(listenFd) -> fd (blocking, close-on-exec) | -1 when no connection is pending.
static Napi::Value Accept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int lfd = FdArg(info, 0);
#ifdef __linux__
  int fd = RetryEintr([&] { return accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC); });
#else
  int fd = RetryEintr([&] { return accept(lfd, nullptr, nullptr); });
#endif
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) return Napi::Number::New(env, -1);
    return ThrowErrno(env, errno, "accept");
  }
  UniqueFd f(fd);
#ifndef __linux__
  SetCloexec(fd);
#endif
  // BSDs hand out accepted sockets with the listener's O_NONBLOCK; connections are blocking.
  if (!SetNonBlock(fd, false)) return ThrowErrno(env, errno, "fcntl");
  return Napi::Number::New(env, f.Release());
}

// connect(family, hostOrPath, port) -> [fd, inProgress]. Non-blocking: when inProgress, wait
// for writability (Watcher) and call connectFinish(fd). EAGAIN (a full Unix backlog) is
// thrown for the caller to retry.
static Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string family = info[0].As<Napi::String>().Utf8Value();
  std::string host = info[1].As<Napi::String>().Utf8Value();
  int port = info[2].As<Napi::Number>().Int32Value();
  SockAddr a;
  int domain = 0;
  socklen_t len = MakeAddr(env, family, host, port, &a, &domain);
  if (len == 0) return env.Undefined();
  UniqueFd fd = NewSocket(domain, true);
  if (!fd.Valid()) return ThrowErrno(env, errno, "socket");
  bool inProgress = false;
  if (connect(fd.Get(), &a.sa, len) < 0) {
    // EINTR on a non-blocking connect: the connection continues asynchronously.
    if (errno == EINPROGRESS || errno == EINTR) inProgress = true;
    else return ThrowErrno(env, errno, "connect", domain == AF_UNIX ? host.c_str() : nullptr);
  }
  if (!inProgress && !SetNonBlock(fd.Get(), false)) return ThrowErrno(env, errno, "fcntl");
  Napi::Array r = Napi::Array::New(env, 2);
  r.Set(0u, Napi::Number::New(env, fd.Release()));
  r.Set(1u, Napi::Boolean::New(env, inProgress));
  return r;
}

// connectFinish(fd): throws the connect error, if any, and makes the socket blocking.
static Napi::Value ConnectFinish(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return ThrowErrno(env, errno, "getsockopt");
  if (err != 0) return ThrowErrno(env, err, "connect");
  if (!SetNonBlock(fd, false)) return ThrowErrno(env, errno, "fcntl");
  return env.Undefined();
}

// getpeername-free check that fd is a connected stream socket's own address (for tests).
static Napi::Value SockName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SockAddr a;
  memset(&a, 0, sizeof a);
  socklen_t len = sizeof a;
  if (getsockname(FdArg(info, 0), &a.sa, &len) < 0) return ThrowErrno(env, errno, "getsockname");
  return AddrToJs(env, a);
}

// shutdown(fd): SHUT_RDWR, so a peer sharing the socket through another process sees EOF.
static Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  shutdown(FdArg(info, 0), SHUT_RDWR);
  return info.Env().Undefined();
}

// copyBytes(dst, dstOffset, src, srcOffset, length): memcpy between two typed arrays' bytes.
// For rings in shared memory: V8 copies to or from a SharedArrayBuffer with relaxed atomic
// stores, byte by byte when unaligned (~1 ms per MiB here); memcpy is 20x faster. Bounds are
// checked by the caller (lib/queues.ts); they are re-checked here because a bad offset would
// corrupt memory.
static Napi::Value CopyBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::TypedArray d = info[0].As<Napi::TypedArray>(), s = info[2].As<Napi::TypedArray>();
  int64_t doff = info[1].As<Napi::Number>().Int64Value(), soff = info[3].As<Napi::Number>().Int64Value();
  int64_t n = info[4].As<Napi::Number>().Int64Value();
  if (doff < 0 || soff < 0 || n < 0 || doff + n > int64_t(d.ByteLength()) || soff + n > int64_t(s.ByteLength()))
    return ThrowCode(env, "ERR_OUT_OF_RANGE", "copyBytes: range out of bounds", false);
  char* dp = TypedData(d);
  const char* sp = TypedData(s);
  if (n == 0) return env.Undefined();
  if (dp == nullptr || sp == nullptr) return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "copyBytes: not a typed array", true);
  memmove(dp + doff, sp + soff, size_t(n));
  return env.Undefined();
}

void InitPipe(Napi::Env env, Napi::Object exports) {
  exports.Set("copyBytes", Napi::Function::New(env, CopyBytes, "copyBytes"));
  exports.Set("pipe", Napi::Function::New(env, Pipe, "pipe"));
  exports.Set("socketpair", Napi::Function::New(env, SocketPair, "socketpair"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("dup2", Napi::Function::New(env, Dup2, "dup2"));
  exports.Set("dup", Napi::Function::New(env, Dup, "dup"));
  exports.Set("setBlocking", Napi::Function::New(env, SetBlocking, "setBlocking"));
  exports.Set("fdKind", Napi::Function::New(env, FdKind, "fdKind"));
  exports.Set("pollFds", Napi::Function::New(env, PollFds, "pollFds"));
  exports.Set("sendFrame", Napi::Function::New(env, SendFrame, "sendFrame"));
  exports.Set("writeSome", Napi::Function::New(env, WriteSome, "writeSome"));
  exports.Set("trySendFrame", Napi::Function::New(env, TrySendFrame, "trySendFrame"));
  exports.Set("frameHeader", Napi::Function::New(env, FrameHeader, "frameHeader"));
  exports.Set("socketListen", Napi::Function::New(env, Listen, "socketListen"));
  exports.Set("socketAccept", Napi::Function::New(env, Accept, "socketAccept"));
  exports.Set("socketConnect", Napi::Function::New(env, Connect, "socketConnect"));
  exports.Set("socketConnectFinish", Napi::Function::New(env, ConnectFinish, "socketConnectFinish"));
  exports.Set("socketName", Napi::Function::New(env, SockName, "socketName"));
  exports.Set("socketShutdown", Napi::Function::New(env, Shutdown, "socketShutdown"));
  exports.Set("FrameReader", FrameReader::Define(env));
  exports.Set("Watcher", Watcher::Define(env));
}

}  // namespace mp
