#!/usr/bin/env bash
# Installs the system packages the workspace needs to build, when they are missing:
# libclang for RocksDB's bindgen (Debian: libclang1-14 + libclang-common-14-dev).
set -euo pipefail

# libclang itself (libclang.so.N, libclang-N.so.N), not libclang-cpp (a different library that
# some machines have alone), plus clang's own headers (stddef.h), which bindgen needs too.
have_libclang() {
    [ -n "${LIBCLANG_PATH:-}" ] && return 0
    compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null || compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null ||
        return 1
    compgen -G '/usr/lib/llvm-*/lib/clang/*/include/stddef.h' >/dev/null
}

apt_install() {
    if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
        echo "missing packages: $*; install them with your package manager" >&2
        return 1
    fi
    local sudo=""; [ "$(id -u)" != 0 ] && sudo=sudo
    echo "installing with ${sudo:+sudo }apt-get: $*"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

if command -v c++ >/dev/null 2>&1; then
    echo "C++ compiler: present"
else
    echo "C++ compiler: missing, installing g++ (RocksDB is C++17)"
    apt_install g++
fi

if have_libclang; then
    echo "libclang: present"
else
    echo "libclang: missing, installing (needed by RocksDB's bindgen)"
    if apt-cache show libclang1-14 >/dev/null 2>&1 || apt-get update -qq; then
        apt_install libclang1-14 libclang-common-14-dev || apt_install libclang-dev
    fi
fi
