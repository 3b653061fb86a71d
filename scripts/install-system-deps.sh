#!/usr/bin/env bash
# System packages the test suite uses beyond Python: tesseract (the second OCR voter).
# Installs only what is missing, and only where it can (root with apt-get); elsewhere it
# says what to install and carries on (the OCR expert then votes with rapidocr alone, and the
# tesseract test fails, naming the missing binary).
set -euo pipefail
missing=()
command -v tesseract >/dev/null 2>&1 || missing+=(tesseract-ocr)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "please install: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
fi
