# BPF objects (included by the top-level Makefile). Never committed: everything lands in build/bpf.
# `make bpf` generates vmlinux.h from the running kernel's BTF and compiles every
# producers/bpf/*.bpf.c and sync/bpf/*.bpf.c into build/bpf/<name>.bpf.o (CO-RE).
BPF_BUILD   ?= build/bpf
BPF_CLANG   ?= clang
BPF_VMLINUX ?= /sys/kernel/btf/vmlinux
BPF_CFLAGS  ?= -O2 -g -Wall -Wno-unused-function -target bpf -D__TARGET_ARCH_x86
BPF_SRCS    := $(wildcard producers/bpf/*.bpf.c) $(wildcard sync/bpf/*.bpf.c)
BPF_OBJS    := $(addprefix $(BPF_BUILD)/,$(notdir $(BPF_SRCS:.bpf.c=.bpf.o)))
BPF_HDRS    := $(wildcard bpf/include/*.h) $(wildcard producers/bpf/*.h) $(wildcard sync/bpf/*.h)

vpath %.bpf.c producers/bpf sync/bpf

.PHONY: bpf bpf-clean
bpf: $(BPF_OBJS)

$(BPF_BUILD)/vmlinux.h: $(BPF_VMLINUX)
	@mkdir -p $(BPF_BUILD)
	bpftool btf dump file $(BPF_VMLINUX) format c > $@.tmp && mv $@.tmp $@

$(BPF_BUILD)/%.bpf.o: %.bpf.c $(BPF_HDRS) $(BPF_BUILD)/vmlinux.h
	$(BPF_CLANG) $(BPF_CFLAGS) -I $(BPF_BUILD) -I bpf/include -I producers/bpf -I sync/bpf -c $< -o $@

bpf-clean:
	rm -rf $(BPF_BUILD)
