// fgemu: dynamic shared memory and the names `extern __shared__` arrays may use.
//
// Under the emulation `extern __shared__ T name[];` reads `extern thread_local T name[];` (see cuda_emu.h). That
// declaration refers to a thread-local variable with external linkage called `name` (in the kernel's namespace) and
// to its C++ "TLS init function" `_ZTH<mangled name>`. Both must be defined somewhere, and a kernel source cannot
// define them itself without an #ifdef. This file defines them as aliases: every registered name is the same per-host-
// thread buffer `fgemu_dynamic_smem` (227 KB, sm_90's opt-in maximum), and every init function is a no-op.
//
// Adding a name: when a kernel uses a name that is not listed below, linking the test binary fails with
//     undefined reference to `TLS init function for fastgan::emu::my_buf'
// and importing the extension fails with
//     undefined symbol: _ZTHN7fastgan3emu6my_bufE
// Take the mangled name without its leading `_ZTH` (here `N7fastgan3emu6my_bufE`: N, then <length><identifier> for
// each namespace and the name, then E) and add
//     FGEMU_EXTERN_SHARED(N7fastgan3emu6my_bufE)
// below. For a kernel in the global namespace use FGEMU_EXTERN_SHARED_GLOBAL(my_buf, 6my_buf). Kernels in an anonymous
// namespace cannot use `extern __shared__` under the emulation (the name would have internal linkage). tests/test_emu.py
// checks that every `extern __shared__` name used in csrc/kernels/*.cu is registered.
#include "cuda_emu.h"

extern "C" {
// The one dynamic shared memory buffer (per host thread, i.e. per emulated block).
thread_local __attribute__((aligned(256))) unsigned char fgemu_dynamic_smem[232448];
__attribute__((visibility("hidden"))) void fgemu_tls_init_noop() {}
}

namespace fgemu {
namespace rt {
void* dynamic_smem() { return fgemu_dynamic_smem; }
}  // namespace rt
}  // namespace fgemu

#define FGEMU_EXTERN_SHARED_SYM(var, init)                                                  \
  asm(".globl " var "\n\t.hidden " var "\n\t.set " var ", fgemu_dynamic_smem\n\t.globl " init \
      "\n\t.hidden " init "\n\t.set " init ", fgemu_tls_init_noop\n");
#define FGEMU_EXTERN_SHARED(enc) FGEMU_EXTERN_SHARED_SYM("_Z" #enc, "_ZTH" #enc)
#define FGEMU_EXTERN_SHARED_GLOBAL(name, enc) FGEMU_EXTERN_SHARED_SYM(#name, "_ZTH" #enc)

// namespace fastgan::emu (where csrc/kernels/*.cu kernels live under FG_EMU)
FGEMU_EXTERN_SHARED(N7fastgan3emu4smemE)
FGEMU_EXTERN_SHARED(N7fastgan3emu5shmemE)
FGEMU_EXTERN_SHARED(N7fastgan3emu3shmE)
FGEMU_EXTERN_SHARED(N7fastgan3emu5sdataE)
FGEMU_EXTERN_SHARED(N7fastgan3emu6s_dataE)
FGEMU_EXTERN_SHARED(N7fastgan3emu8smem_rawE)
FGEMU_EXTERN_SHARED(N7fastgan3emu8smem_bufE)
FGEMU_EXTERN_SHARED(N7fastgan3emu10smem_bytesE)
FGEMU_EXTERN_SHARED(N7fastgan3emu10shared_memE)
FGEMU_EXTERN_SHARED(N7fastgan3emu13shared_memoryE)
FGEMU_EXTERN_SHARED(N7fastgan3emu10shared_bufE)
FGEMU_EXTERN_SHARED(N7fastgan3emu14shared_storageE)
FGEMU_EXTERN_SHARED(N7fastgan3emu8dyn_smemE)
FGEMU_EXTERN_SHARED(N7fastgan3emu12dynamic_smemE)
FGEMU_EXTERN_SHARED(N7fastgan3emu9dyn_shmemE)
FGEMU_EXTERN_SHARED(N7fastgan3emu5dsmemE)
FGEMU_EXTERN_SHARED(N7fastgan3emu5s_memE)
FGEMU_EXTERN_SHARED(N7fastgan3emu4sbufE)
FGEMU_EXTERN_SHARED(N7fastgan3emu5s_bufE)
// namespace fastgan
FGEMU_EXTERN_SHARED(N7fastgan4smemE)
FGEMU_EXTERN_SHARED(N7fastgan5shmemE)
FGEMU_EXTERN_SHARED(N7fastgan3shmE)
FGEMU_EXTERN_SHARED(N7fastgan5sdataE)
FGEMU_EXTERN_SHARED(N7fastgan6s_dataE)
FGEMU_EXTERN_SHARED(N7fastgan8smem_rawE)
FGEMU_EXTERN_SHARED(N7fastgan8smem_bufE)
FGEMU_EXTERN_SHARED(N7fastgan10smem_bytesE)
FGEMU_EXTERN_SHARED(N7fastgan10shared_memE)
FGEMU_EXTERN_SHARED(N7fastgan13shared_memoryE)
FGEMU_EXTERN_SHARED(N7fastgan10shared_bufE)
FGEMU_EXTERN_SHARED(N7fastgan14shared_storageE)
FGEMU_EXTERN_SHARED(N7fastgan8dyn_smemE)
FGEMU_EXTERN_SHARED(N7fastgan12dynamic_smemE)
FGEMU_EXTERN_SHARED(N7fastgan9dyn_shmemE)
FGEMU_EXTERN_SHARED(N7fastgan5dsmemE)
FGEMU_EXTERN_SHARED(N7fastgan5s_memE)
FGEMU_EXTERN_SHARED(N7fastgan4sbufE)
FGEMU_EXTERN_SHARED(N7fastgan5s_bufE)
// global namespace (kept short: these become global symbols of the module)
FGEMU_EXTERN_SHARED_GLOBAL(smem, 4smem)
FGEMU_EXTERN_SHARED_GLOBAL(shmem, 5shmem)
FGEMU_EXTERN_SHARED_GLOBAL(sdata, 5sdata)
FGEMU_EXTERN_SHARED_GLOBAL(smem_raw, 8smem_raw)
FGEMU_EXTERN_SHARED_GLOBAL(dyn_smem, 8dyn_smem)
FGEMU_EXTERN_SHARED_GLOBAL(shared_mem, 10shared_mem)
// tests/emu (sample kernels live in namespace fgemu_tests)
FGEMU_EXTERN_SHARED(N11fgemu_tests8dyn_tileE)
