{
  "targets": [
    {
      "target_name": "multiproc",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/function.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=9", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags": ["-Wall", "-Wextra", "-Werror"],
      "cflags_cc": ["-std=gnu++20", "-fno-exceptions", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"],
      "conditions": [
        # One seam per primitive: the POSIX implementations (Linux, macOS) or the Windows ones.
        ["OS!='win'", {
          "sources": [
            "native/posix/fork.cc",
            "native/posix/wait.cc",
            "native/posix/spawn.cc",
            "native/posix/shm.cc",
            "native/posix/futex.cc",
            "native/posix/sem.cc",
            "native/posix/pipe.cc",
            "native/posix/tracker.cc"
          ]
        }],
        ["OS=='win'", {
          "sources": [
            "native/win/wait.cc",
            "native/win/shm.cc",
            "native/win/sem.cc",
            "native/win/pipe.cc"
          ]
        }],
        ["OS=='linux'", {
          "libraries": ["-lpthread", "-lrt"],
          # Bind every imported symbol at load (in the parent): lazily bound, each function first
          # called in a forked child (uv_loop_fork, the exit handler...) is looked up there,
          # faulting in the symbol tables of every loaded library: ~40 of its page faults.
          "ldflags": ["-Wl,-z,now"]
        }],
        ["OS=='mac'", {
          "xcode_settings": {
            "GCC_ENABLE_CPP_EXCEPTIONS": "NO",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++20",
            "MACOSX_DEPLOYMENT_TARGET": "11.0",
            "OTHER_CFLAGS": ["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]
          }
        }],
        ["OS=='win'", {
          "msvs_settings": { "VCCLCompilerTool": { "ExceptionHandling": 0, "AdditionalOptions": ["/std:c++20"] } }
        }]
      ]
    }
  ]
}
