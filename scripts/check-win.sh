#!/usr/bin/env bash
# Compile-checks the Windows side of the platform seam (native/win/*.cc with the shared
# native/addon.cc, errors.cc, function.cc) with mingw-w64: -fsyntax-only against Node's headers,
# the same warnings-as-errors as binding.gyp. Nothing here can run Windows code; this keeps it
# from rotting. In CI (CI=true, root) a missing compiler is installed from Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=x86_64-w64-mingw32-g++-posix
if ! command -v "$CXX" >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "check-win: installing mingw-w64 (g++-mingw-w64-x86-64-posix) from Debian" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-mingw-w64-x86-64-posix >/dev/null
  else
    echo "check-win: $CXX not found; install it with: apt-get install g++-mingw-w64-x86-64-posix" >&2
    exit 1
  fi
fi
NODE_INC="${NODE_INCLUDE_DIR:-$(npm config get nodedir 2>/dev/null | grep -v undefined || true)}"
NODE_INC="${NODE_INC:+$NODE_INC/include/node}"
[ -d "$NODE_INC" ] || NODE_INC="$(dirname "$(dirname "$(command -v node)")")/include/node"
[ -f "$NODE_INC/node_api.h" ] || { echo "check-win: Node headers not found (set NODE_INCLUDE_DIR)" >&2; exit 1; }
NAPI_INC="$(node -p "require('node-addon-api').include_dir")"
status=0
for f in native/addon.cc native/errors.cc native/function.cc native/win/*.cc; do
  if ! "$CXX" -std=c++20 -fsyntax-only -Wall -Wextra -Werror -Wno-unused-parameter \
      -DNAPI_VERSION=9 -DNAPI_DISABLE_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED \
      -D_WIN32_WINNT=0x0A00 -DWIN32_LEAN_AND_MEAN -DNOMINMAX \
      -isystem "$NAPI_INC" -isystem "$NODE_INC" "$f"; then
    status=1
  fi
done
[ $status = 0 ] && echo "check-win: native/win and the shared sources compile for Windows (mingw-w64, syntax only)"
exit $status
