#!/usr/bin/env bash
# Installs the system packages the workspace needs to build, when they are missing:
# libclang for RocksDB's bindgen (Debian: libclang1-14 + libclang-common-14-dev).
set -euo pipefail

have_libclang() {
    [ -n "${LIBCLANG_PATH:-}" ] && return 0
    ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1
}

apt_install() {
    if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
        echo "missing packages: $*; install them with your package manager" >&2
        return 1
    fi
    local sudo=""; [ "$(id -u)" != 0 ] && sudo=sudo
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
