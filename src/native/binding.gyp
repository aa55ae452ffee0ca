{
  "targets": [
    {
      "target_name": "replfs_sys",
      "sources": ["replfs_sys.c", "fuse_reply_shim.c"],
      "libraries": ["-ldl"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "cflags_c": ["-std=gnu11"]
    }
  ]
}
