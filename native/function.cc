// Where a function was defined: the script (module URL or file path) and the position of its
// source. The spawn and forkserver start methods send functions by reference (module + export
// name); this tells lib/function_ref.ts which module to look in. V8 only, no OS primitive, so it
// is the same on every platform.
#include <napi.h>
#include <node.h>
#include <v8.h>

#include <string.h>

#include "addon.h"

namespace mp {

namespace {

// napi_value is a v8::Local<v8::Value> under another name (node's own v8impl converts the same
// way); the addon already depends on Node's C++ API for its fork core.
v8::Local<v8::Value> ToV8(napi_value v) {
  v8::Local<v8::Value> local;
  static_assert(sizeof(local) == sizeof(v), "napi_value is a v8::Local");
  memcpy(static_cast<void*>(&local), &v, sizeof(v));
  return local;
}

napi_value FromV8(v8::Local<v8::Value> local) {
  napi_value v;
  memcpy(static_cast<void*>(&v), &local, sizeof(v));
  return v;
}

// functionOrigin(fn) -> { script, line, column } (0-based line/column) or null for a function
// without a script of its own (builtins, bound functions, native functions).
Napi::Value FunctionOrigin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) return env.Null();
  v8::Local<v8::Value> value = ToV8(info[0]);
  v8::Local<v8::Function> fn = value.As<v8::Function>();
  // A bound function's script is its target's; its bound arguments would not travel: refuse.
  if (!fn->GetBoundFunction()->IsUndefined()) return env.Null();
  int line = fn->GetScriptLineNumber();
  int column = fn->GetScriptColumnNumber();
  if (line == v8::Function::kLineOffsetNotFound) return env.Null();
  v8::Local<v8::Value> name = fn->GetScriptOrigin().ResourceName();
  if (name.IsEmpty() || !name->IsString()) return env.Null();
  Napi::Object out = Napi::Object::New(env);
  out.Set("script", Napi::Value(env, FromV8(name)));
  out.Set("line", Napi::Number::New(env, line));
  out.Set("column", Napi::Number::New(env, column));
  return out;
}

}  // namespace

void InitFunction(Napi::Env env, Napi::Object exports) {
  exports.Set("functionOrigin", Napi::Function::New(env, FunctionOrigin, "functionOrigin"));
}

}  // namespace mp
