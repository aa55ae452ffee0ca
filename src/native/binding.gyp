{
  "targets": [
    {
      "target_name": "replfs_sys",
      "sources": ["replfs_sys.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "cflags_c": ["-std=gnu11"]
    }
  ]
}
