// fgemu runtime: executes kernel grids on the CPU with CUDA semantics (see cuda_emu.h and README.md).
//
// Execution model
//   * Blocks run one after another on the launching host thread (launches are serialised by a process-wide mutex);
//     with FGEMU_BLOCKS > 1 several are resident and interleave at synchronisation points (run_grid, sync_point).
//   * FGEMU_RACECHECK: shared memory by shadow comparison at thread switches; global memory through the access hooks
//     of instrumented kernel code (memcheck.cpp -> mem_access, gc_access).
//   * Every CUDA thread of a block is a cooperative fiber. A thread runs until it reaches a synchronisation point
//     (__syncthreads*, a warp intrinsic, __nanosleep) or exits; then the next runnable thread is switched in.
//   * Fibers are started lazily and a finished thread hands its stack to the next unstarted thread, so a block that
//     never synchronises runs all its threads as plain calls on one stack, without any context switch.
//   * Stacks (FGEMU_STACK_KB, default 256 KB each, guard page below) are allocated on demand and reused for ever.
//   * Shared memory is thread_local storage (see cuda_emu.h): the launch's part of the kernel module's TLS block of the
//     launching thread (the block less the other kernels' function-local variables: smem_skip) is saved, filled with
//     0xFF at each block start, and restored after the launch.
// No thread_local state of this module may be touched between save and restore except the dynamic shared memory.
#include "cuda_emu.h"
#include "access_hooks.h"

#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cxxabi.h>
#include <chrono>
#include <cstring>
#include <mutex>
#include <unordered_map>

#if !defined(__x86_64__) || defined(FGEMU_USE_UCONTEXT)
#define FGEMU_UCONTEXT 1
#include <ucontext.h>
#endif

extern "C" void* __tls_get_addr(void*);

// AddressSanitizer builds (CMake -DFASTGAN_SANITIZE=address): tell ASan about every stack switch, and clear the
// shadow of a stack before reusing it (an abandoned fiber leaves its frames' redzones poisoned).
#if defined(__SANITIZE_ADDRESS__)
#define FGEMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FGEMU_ASAN 1
#endif
#endif
#ifdef FGEMU_ASAN
extern "C" {
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
}
#endif

namespace fgemu {
BuiltinVars g_builtin{};
bool g_racecheck = false;
bool g_sync_hooks = false;
bool g_programmatic = false;
}

// =================================================================================================================
// Context switching.
// =================================================================================================================
#ifndef FGEMU_UCONTEXT
// fgemu_ctx_switch(save, to): push the callee-saved registers, store rsp in *save, load rsp = to, pop, return.
// fgemu_ctx_trampoline: first "return" target of a new fiber; r12 = argument, r13 = entry function.
// (.pushsection/.popsection: the compiler does not see a section change in top-level asm, and would emit the next
// zero-initialised variable into .text, read-only at run time.)
asm(R"(
  .pushsection .text
  .p2align 4
  .globl fgemu_ctx_switch
  .hidden fgemu_ctx_switch
  .type fgemu_ctx_switch, @function
fgemu_ctx_switch:
  .cfi_startproc
  pushq %rbp
  .cfi_adjust_cfa_offset 8
  pushq %rbx
  .cfi_adjust_cfa_offset 8
  pushq %r12
  .cfi_adjust_cfa_offset 8
  pushq %r13
  .cfi_adjust_cfa_offset 8
  pushq %r14
  .cfi_adjust_cfa_offset 8
  pushq %r15
  .cfi_adjust_cfa_offset 8
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .cfi_endproc
  .size fgemu_ctx_switch, .-fgemu_ctx_switch

  .p2align 4
  .globl fgemu_ctx_trampoline
  .hidden fgemu_ctx_trampoline
  .type fgemu_ctx_trampoline, @function
fgemu_ctx_trampoline:
  .cfi_startproc
  .cfi_undefined rip
  movq %r12, %rdi
  callq *%r13
  ud2
  .cfi_endproc
  .size fgemu_ctx_trampoline, .-fgemu_ctx_trampoline
  .popsection
)");
extern "C" void fgemu_ctx_switch(void** save, void* to);
extern "C" void fgemu_ctx_trampoline();
#endif

namespace fgemu {
namespace rt {

unsigned char g_access_checks = 0;  // access_hooks.h; set by refresh_access_checks()

namespace {

constexpr int kMaxThreads = 1024;
constexpr size_t kStaticSmemLimit = 48 * 1024;     // without opt-in (static + dynamic)
constexpr size_t kDynamicSmemOptinLimit = 232448;  // sm_90: 227 KB per block with cudaFuncSetAttribute

enum { kScheduleForward = 0, kScheduleReverse = 1, kScheduleRandom = 2 };
int g_schedule = kScheduleForward;
unsigned g_schedule_seed = 0;
bool g_env_read = false;
int g_blocks_env = 0;            // FGEMU_BLOCKS: resident blocks (0: 4 under the random schedule, else 1)
bool g_racecheck_full = false;   // FGEMU_RACECHECK=full: compare all shared memory at every switch, every block
int g_poison_mode = 0xFF;        // FGEMU_POISON: a fixed byte 0..255, or -1 = random per launch (from the seed)
unsigned g_poison_seed = 0;
unsigned char g_poison_byte = 0xFF;  // this launch's fill byte
unsigned long g_spin_limit = 200000;  // FGEMU_SPIN_LIMIT: block switches without progress before "deadlock"

[[noreturn]] void bad_env(const char* name, const char* value, const char* expected) {
  throw std::runtime_error(std::string("fgemu: ") + name + "=" + value + ": expected " + expected);
}

// Parses an unsigned decimal integer (the whole string); false if it is not one.
bool parse_uint(const char* s, unsigned long long* out) {
  if (!*s) return false;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (*end || errno || *s == '-') return false;
  *out = v;
  return true;
}

// The FGEMU_* environment, read at the first launch; a malformed value is an error naming the variable (every
// launch reports it until it is fixed).
void read_env_once() {
  if (g_env_read) return;
  unsigned long long n = 0;
  int schedule = kScheduleForward;
  unsigned seed = 0;
  if (const char* s = getenv("FGEMU_SCHEDULE")) {
    std::string v = s;
    if (v == "reverse") {
      schedule = kScheduleReverse;
    } else if (v == "random" || (v.compare(0, 7, "random:") == 0 && parse_uint(s + 7, &n) && n <= 0xFFFFFFFFull)) {
      schedule = kScheduleRandom;
      seed = v == "random" ? 0u : (unsigned)n;
    } else if (!(v.empty() || v == "forward")) {
      bad_env("FGEMU_SCHEDULE", s, "forward, reverse, random or random:<seed>");
    }
  }
  bool race = false, race_full = false;
  if (const char* s = getenv("FGEMU_RACECHECK")) {
    std::string v = s;
    if (v == "1" || v == "full") {
      race = true;
      race_full = v == "full";
    } else if (!(v.empty() || v == "0")) {
      bad_env("FGEMU_RACECHECK", s, "0, 1 or full");
    }
  }
  int blocks = 0;
  if (const char* s = getenv("FGEMU_BLOCKS")) {
    if (!parse_uint(s, &n) || n > 4096) bad_env("FGEMU_BLOCKS", s, "a number of resident blocks in [0, 4096]");
    blocks = (int)n;
  }
  unsigned long spin = g_spin_limit;
  if (const char* s = getenv("FGEMU_SPIN_LIMIT")) {
    if (!parse_uint(s, &n) || n == 0) bad_env("FGEMU_SPIN_LIMIT", s, "a positive integer");
    spin = (unsigned long)n;
  }
  int poison = 0xFF;
  unsigned poison_seed = 0;
  if (const char* s = getenv("FGEMU_POISON")) {
    std::string v = s;
    const char* hex = v.compare(0, 2, "0x") == 0 ? s + 2 : s;
    char* end = nullptr;
    if (v == "random" || (v.compare(0, 7, "random:") == 0 && parse_uint(s + 7, &n) && n <= 0xFFFFFFFFull)) {
      poison = -1;
      poison_seed = v == "random" ? 0u : (unsigned)n;
    } else {
      unsigned long byte = *hex ? strtoul(hex, &end, 16) : 256;
      if (!end || *end || byte > 255 || strlen(hex) > 2)
        bad_env("FGEMU_POISON", s, "a fill byte in hex (ff, 00, 0x5a) or random / random:<seed>");
      poison = (int)byte;
    }
  }
  g_schedule = schedule;
  g_schedule_seed = seed;
  ::fgemu::g_racecheck = race;
  g_racecheck_full = race_full;
  g_blocks_env = blocks;
  g_spin_limit = spin;
  g_poison_mode = poison;
  g_poison_seed = poison_seed;
  g_env_read = true;
}

struct Ctx {
#ifdef FGEMU_UCONTEXT
  ucontext_t uc;
#else
  void* sp = nullptr;
#endif
};

typedef void (*EntryFn)(void*);

#ifdef FGEMU_UCONTEXT
EntryFn g_uc_entry = nullptr;
void uc_trampoline(unsigned hi, unsigned lo) {
  void* arg = reinterpret_cast<void*>(((uintptr_t)hi << 32) | (uintptr_t)lo);
  g_uc_entry(arg);
  abort();
}
void ctx_init(Ctx* c, char* lo, size_t size, EntryFn fn, void* arg) {
  g_uc_entry = fn;
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = lo;
  c->uc.uc_stack.ss_size = size;
  c->uc.uc_link = nullptr;
  uintptr_t a = reinterpret_cast<uintptr_t>(arg);
  makecontext(&c->uc, reinterpret_cast<void (*)()>(uc_trampoline), 2, (unsigned)(a >> 32), (unsigned)(a & 0xFFFFFFFFu));
}
inline void ctx_switch(Ctx* from, Ctx* to) { swapcontext(&from->uc, &to->uc); }
#else
void ctx_init(Ctx* c, char* lo, size_t size, EntryFn fn, void* arg) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(lo) + size) & ~(uintptr_t)15;
  void** sp = reinterpret_cast<void**>(top - 72);  // sp + 56 (after 6 pops and ret) is 16-byte aligned
  sp[0] = nullptr;                                  // r15
  sp[1] = nullptr;                                  // r14
  sp[2] = reinterpret_cast<void*>(fn);              // r13
  sp[3] = arg;                                      // r12
  sp[4] = nullptr;                                  // rbx
  sp[5] = nullptr;                                  // rbp
  sp[6] = reinterpret_cast<void*>(&fgemu_ctx_trampoline);
  sp[7] = nullptr;
  sp[8] = nullptr;
  c->sp = sp;
}
inline void ctx_switch(Ctx* from, Ctx* to) { fgemu_ctx_switch(&from->sp, to->sp); }
#endif

// =================================================================================================================
// Engine state (one launch at a time, guarded by g_launch_mutex).
// =================================================================================================================
enum ThreadState : uint8_t { kUnstarted, kReady, kRunning, kAtBar, kAtWarp, kAtActive, kExited };

struct Fiber;

struct Thread {
  Fiber* fiber;
  uint3 tid;
  int linear, warp, lane;
  ThreadState state;
  // block barrier
  const char* bar_file;
  int bar_line, bar_kind, bar_pred;
  // warp collective
  int w_kind, w_size, w_param, w_width;
  unsigned w_mask;
  uint64_t w_value;
  const char* w_file;
  int w_line;
  WarpResult w_result;
  bool grid_dep_synced;  // has called cudaGridDependencySynchronize() (programmatic launches)
};

struct WarpState {
  unsigned existing;  // lanes that exist (partial last warp)
  unsigned exited;
  unsigned at_bar;
  unsigned at_op;      // waiting at a mask-based collective
  unsigned at_active;  // waiting at __activemask
};

struct Fiber {
  Ctx ctx;
  char* stack_lo;  // usable stack [stack_lo, stack_lo + stack_size)
  size_t color;    // start offset below the top: stack tops would otherwise all map to the same cache sets
  void* asan_fake = nullptr;
  char* map_base;
  size_t map_size;
  Thread* thread;
};

// A parked block's shared memory: the spans (address, length) that differ from the fill byte, their bytes in order.
struct ParkedSmem {
  std::vector<std::pair<unsigned char*, size_t>> spans;
  std::vector<unsigned char> bytes;
};

// The state of one resident block. The running block's state lives in E (an Engine is a BlockState); with several
// resident blocks (FGEMU_BLOCKS) the others are parked in g_slots and swapped in (vectors move, pointers into them
// stay valid) when the scheduler switches blocks.
struct BlockState {
  std::vector<Thread> threads;
  std::vector<WarpState> warps;
  // ready queue (each thread at most once)
  std::vector<Thread*> ready;
  int rhead = 0, rcount = 0;
  int next_unstarted = 0;
  std::vector<int> order;  // thread start / release order (FGEMU_SCHEDULE)
  size_t fibers_used = 0;            // pool entries used by this block
  size_t fiber_base = 0;             // first pool entry of this block's slot
  std::vector<Fiber*> free_fibers;   // stacks of finished threads, reusable within the block
  int n_exited = 0, n_at_bar = 0;
  // current barrier episode
  const char* bar_file = nullptr;
  int bar_line = 0, bar_kind = 0, bar_true = 0;
  bool bar_mismatch = false;
  int bar_result = 0;
  uint32_t bar_epoch = 0;  // barriers released so far (global-memory race check)
  uint3 block_idx{0, 0, 0};
  bool started = false;
  ParkedSmem smem;  // shared memory while parked
};

struct Engine : BlockState {
  const LaunchDesc* d = nullptr;
  int nthreads = 0, nwarps = 0;
  // failure
  bool failed = false;
  std::string error;
  // contexts
  Ctx main_ctx;
  void* main_asan_fake = nullptr;
  const void* main_stack_lo = nullptr;  // the launching thread's stack (for ASan's fiber annotations)
  size_t main_stack_size = 0;
  Fiber* cur_fiber = nullptr;
  Thread* cur = nullptr;
  bool active = false;
};

Engine E;

// Blocks that interleave (FGEMU_BLOCKS > 1): see run_grid().
int g_resident = 1;                // resident blocks requested for this launch
bool g_interleave = false;         // this launch runs several resident blocks (run_grid's second path)
std::vector<BlockState> g_slots;   // parked blocks (slot s's state while another block runs)
bool g_yielded = false;            // the running thread gave the host thread back to the scheduler
unsigned long g_spins = 0;         // block switches since the last progress (a block finished or a barrier released)
uint64_t g_sched_rng = 1;

uint3 block_at(uint64_t linear, dim3 g) {
  return uint3{(unsigned)(linear % g.x), (unsigned)((linear / g.x) % g.y), (unsigned)(linear / ((uint64_t)g.x * g.y))};
}

std::vector<Fiber*>& g_fibers = *new std::vector<Fiber*>();  // pool, grows on demand, never freed (not even at exit)
size_t g_stack_size = 0;
std::mutex g_launch_mutex;
std::atomic<unsigned long> g_launch_thread{0};  // host thread running a launch (0: none)

size_t page_size() {
  static const size_t ps = (size_t)sysconf(_SC_PAGESIZE);
  return ps;
}

size_t stack_size() {
  if (!g_stack_size) {
    size_t kb = 256;
    if (const char* s = getenv("FGEMU_STACK_KB")) {
      long v = atol(s);
      if (v >= 16) kb = (size_t)v;
    }
    g_stack_size = (kb * 1024 + page_size() - 1) & ~(page_size() - 1);
  }
  return g_stack_size;
}

Fiber* fiber_at(size_t i) {
  while (g_fibers.size() <= i) {
    size_t ss = stack_size(), guard = page_size();
    size_t total = ss + guard;
    void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("fgemu: cannot allocate a fiber stack");
    mprotect(m, guard, PROT_NONE);  // stack grows down into the guard page
    Fiber* f = new Fiber();
    f->map_base = static_cast<char*>(m);
    f->map_size = total;
    f->stack_lo = static_cast<char*>(m) + guard;
    f->thread = nullptr;
    f->color = (g_fibers.size() * 832) % 4096;
    g_fibers.push_back(f);
  }
  return g_fibers[i];
}

// ---- messages --------------------------------------------------------------------------------------------------
std::string fmt_dim(dim3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}
std::string fmt_site(const char* file, int line) {
  const char* f = file ? file : "?";
  return std::string(f) + ":" + std::to_string(line);
}
const char* bar_name(int kind) {
  switch (kind) {
    case kBarCount: return "__syncthreads_count()";
    case kBarAnd: return "__syncthreads_and()";
    case kBarOr: return "__syncthreads_or()";
  }
  return "__syncthreads()";
}
const char* warp_name(int kind) {
  static const char* names[kNumWarpKinds] = {
      "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync", "__ballot_sync", "__any_sync",
      "__all_sync", "__uni_sync", "__syncwarp", "__match_any_sync", "__match_all_sync", "__reduce_add_sync",
      "__reduce_add_sync", "__reduce_min_sync", "__reduce_min_sync", "__reduce_max_sync", "__reduce_max_sync",
      "__reduce_and_sync", "__reduce_or_sync", "__reduce_xor_sync", "fgemu::warp_exchange (mma / ldmatrix)"};
  return (kind >= 0 && kind < kNumWarpKinds) ? names[kind] : "warp intrinsic";
}
std::string fmt_mask(unsigned m) {
  char b[16];
  snprintf(b, sizeof b, "0x%08x", m);
  return b;
}
std::string fmt_lanes(unsigned m) {
  std::string s;
  int i = 0;
  while (i < 32) {
    if (!((m >> i) & 1u)) { ++i; continue; }
    int j = i;
    while (j + 1 < 32 && ((m >> (j + 1)) & 1u)) ++j;
    if (!s.empty()) s += ",";
    s += std::to_string(i);
    if (j > i) s += "-" + std::to_string(j);
    i = j + 1;
  }
  return s.empty() ? "none" : s;
}
std::string launch_prefix() {
  const LaunchDesc& d = *E.d;
  return std::string("fgemu: kernel '") + (d.name ? d.name : "?") + "' (grid " + fmt_dim(d.grid) + ", block " +
         fmt_dim(d.block) + ", dynamic smem " + std::to_string(d.smem) + " B)";
}
std::string where_block() { return "block " + fmt_dim(dim3(g_builtin.block_idx)); }
std::string where_thread(const Thread* t) {
  return where_block() + ", thread " + fmt_dim(dim3(t->tid)) + " (warp " + std::to_string(t->warp) + ", lane " +
         std::to_string(t->lane) + ")";
}

// ---- race check (FGEMU_RACECHECK=1) -----------------------------------------------------------------------------
// Between two block barriers every thread sees the shared memory as it was at the last barrier plus its own writes;
// bytes that other threads wrote in the meantime read as 0xFF (NaN). A read that needs a barrier therefore gives
// garbage instead of silently working because the emulator happened to run the writer first. Writes are found by
// comparing the shared memory with a shadow of what was installed when the thread was switched in: two threads
// writing different values to the same byte, or a plain store to a byte that other threads update with atomics, is
// reported as a race. __syncwarp() publishes its lanes' writes; atomics (which call note_atomic) act on the committed
// value and stay visible to everybody.
//
// Cost per thread switch: the bytes owned by the two threads involved, plus a comparison of the "scanned pages":
// the dynamic shared memory and the 64-byte pages of the thread-local block this kernel was seen writing. All pages
// are compared in the first block a kernel runs under the check; later, a write to a new page is noticed (and its
// page added) at the next barrier, unchecked that one time.
struct RaceRange {
  unsigned char* p;
  size_t len, off;  // off: index of p[0] in the shadow arrays (a multiple of kPage)
  bool dynamic;
  size_t block_off;  // static ranges: offset of p[0] in the module's thread-local block
};
constexpr uint32_t kPage = 64;
constexpr uint32_t kOwnerMask = 0xFFFFu, kAtomicBit = 1u << 16, kMultiAtomicBit = 1u << 17;
struct RaceState {
  bool on = false;
  std::vector<RaceRange> ranges;
  size_t total = 0;
  std::vector<unsigned char> committed;  // the values every thread sees after the next barrier
  std::vector<unsigned char> shadow;     // what memory held when the current view was installed
  std::vector<uint32_t> owner;           // 0: untouched since the barrier; else thread+1 | atomic flags
  std::vector<uint32_t> dirty;           // indices with owner != 0
  std::vector<std::vector<uint32_t>> owned;  // per thread: indices it wrote (plain) since the barrier
  std::vector<uint32_t> owners;              // threads with a non-empty `owned`
  uint32_t view = 0;                         // thread (linear+1) whose view is installed; 0: nobody's
  const char* since_file = nullptr;
  int since_line = 0;
  std::vector<uint32_t> scan_pages;
  std::vector<uint8_t>* learned = nullptr;  // per kernel: page -> 1
  bool full_scan = false;
};
struct LearnedPages {
  std::vector<size_t> layout;  // the ranges' (offset, length) the pages index
  std::vector<uint8_t> pages;
};
std::unordered_map<const void*, LearnedPages> g_rc_learned;
RaceState R;
std::vector<RaceState> g_slot_rc;  // parked blocks' race state (FGEMU_BLOCKS > 1)

inline unsigned char* rc_addr(uint32_t i) {
  for (const RaceRange& r : R.ranges)
    if (i >= r.off && i < r.off + r.len) return r.p + (i - r.off);
  return nullptr;
}
inline uint32_t rc_index(const void* a, bool* found) {
  const unsigned char* p = static_cast<const unsigned char*>(a);
  for (const RaceRange& r : R.ranges)
    if (p >= r.p && p < r.p + r.len) {
      *found = true;
      return (uint32_t)(r.off + (size_t)(p - r.p));
    }
  *found = false;
  return 0;
}
inline void rc_set(uint32_t i, unsigned char v) {
  *rc_addr(i) = v;
  R.shadow[i] = v;
}

std::string describe_static_smem(size_t off);  // (below: the variable at that offset of the thread-local block)

std::string rc_where(uint32_t i) {
  for (const RaceRange& r : R.ranges)
    if (i >= r.off && i < r.off + r.len) {
      if (r.dynamic) return "byte " + std::to_string(i - r.off) + " of dynamic shared memory";
      return "static shared memory (" + describe_static_smem(r.block_off + (i - r.off)) + ")";
    }
  return "shared memory";
}
std::string rc_thread(uint32_t id) { return "thread " + fmt_dim(dim3(E.threads[id - 1].tid)); }
void rc_fail(const std::string& what) {
  if (E.failed) return;
  E.failed = true;
  E.error = launch_prefix() + ": shared memory race in " + where_block() + ": " + what + " between " +
            (R.since_file ? "the barrier at " + fmt_site(R.since_file, R.since_line) : std::string("the block start")) +
            " and the next barrier";
}

void rc_mark_page(uint32_t i) {
  uint32_t pg = i / kPage;
  if (!(*R.learned)[pg]) {
    (*R.learned)[pg] = 1;
    R.scan_pages.push_back(pg);
  }
}

void rc_clear_interval() {
  for (uint32_t th : R.owners) R.owned[th].clear();
  R.owners.clear();
  R.dirty.clear();
}

void rc_setup_block() {
  if (!R.on) return;
  R.committed.resize(R.total);
  R.shadow.resize(R.total);
  R.owner.assign(R.total, 0);
  R.owned.resize((size_t)E.nthreads + 1);
  rc_clear_interval();
  for (const RaceRange& r : R.ranges) {
    memcpy(R.committed.data() + r.off, r.p, r.len);
    memcpy(R.shadow.data() + r.off, r.p, r.len);
  }
  R.view = 0;
  R.since_file = nullptr;
  R.since_line = 0;
}

// Installs thread t's view: hide the bytes the previous view's thread wrote, show t's own.
inline void rc_begin(Thread* t) {
  if (!R.on) return;
  const uint32_t me = (uint32_t)t->linear + 1;
  if (R.view == me) return;
  if (R.view)
    for (uint32_t i : R.owned[R.view])
      if (!(R.owner[i] & kAtomicBit)) rc_set(i, g_poison_byte);
  for (uint32_t i : R.owned[me]) rc_set(i, R.committed[i]);
  R.view = me;
}

void rc_write(uint32_t i, uint32_t me, unsigned char v) {
  uint32_t& o = R.owner[i];
  R.shadow[i] = v;
  if (o == 0) {
    o = me;
    R.dirty.push_back(i);
    if (R.owned[me].empty()) R.owners.push_back(me);
    R.owned[me].push_back(i);
  } else if ((o & kOwnerMask) != me || (o & kMultiAtomicBit)) {
    uint32_t other = o & kOwnerMask;
    if (!(o & kAtomicBit) && R.committed[i] == v) return;  // same value written twice: benign, not reported
    if (o & kAtomicBit)
      rc_fail(rc_where(i) + " is written by " + rc_thread(me) + " and updated atomically by " + rc_thread(other) +
              ((o & kMultiAtomicBit) ? " and others" : ""));
    else
      rc_fail(rc_where(i) + " is written by " + rc_thread(other) + " and by " + rc_thread(me));
    return;
  }
  R.committed[i] = v;
}

// The bytes of [m, m + len) (index i0 on) that changed since the view was installed.
inline void rc_scan(const unsigned char* m, uint32_t i0, size_t len, uint32_t me) {
  const unsigned char* sh = R.shadow.data() + i0;
  size_t j = 0;
  for (;;) {
    // fast part: 256-byte runs (the C library's vectorised memcmp: ~3x the word loop here, which is most of the time
    // of FGEMU_RACECHECK=full), then whole 8-byte words, that did not change
    while (j + 256 <= len && memcmp(m + j, sh + j, 256) == 0) j += 256;
    for (; j + 8 <= len; j += 8) {
      uint64_t a, b;
      memcpy(&a, m + j, 8);
      memcpy(&b, sh + j, 8);
      if (a != b) break;
    }
    if (j >= len) return;
    size_t end = std::min(j + 8, len);
    for (size_t q = j; q < end; ++q)
      if (m[q] != sh[q]) {
        if (R.full_scan) rc_mark_page((uint32_t)(i0 + q));
        rc_write((uint32_t)(i0 + q), me, m[q]);
      }
    j = end;
  }
}

// Thread t stops running: record (and check) what it wrote.
void rc_end(Thread* t) {
  if (!R.on || E.failed) return;
  const uint32_t me = (uint32_t)t->linear + 1;
  if (R.full_scan) {
    for (const RaceRange& r : R.ranges) rc_scan(r.p, (uint32_t)r.off, r.len, me);
    return;
  }
  for (uint32_t pg : R.scan_pages) {
    const uint32_t i0 = pg * kPage;
    for (const RaceRange& r : R.ranges)
      if (i0 >= r.off && i0 < r.off + r.len) {
        rc_scan(r.p + (i0 - r.off), i0, std::min<size_t>(kPage, r.off + r.len - i0), me);
        break;
      }
  }
}

// At barriers and block end: writes outside the scanned pages are committed unattributed; their pages are scanned
// from now on.
void rc_learn() {
  for (const RaceRange& r : R.ranges) {
    const unsigned char* m = r.p;
    unsigned char* sh = R.shadow.data() + r.off;
    for (size_t j = 0; j < r.len; j += 8) {
      uint64_t a = 0, b = 0;
      size_t w = std::min<size_t>(8, r.len - j);
      memcpy(&a, m + j, w);
      memcpy(&b, sh + j, w);
      if (a == b) continue;
      for (size_t q = j; q < j + w; ++q) {
        if (m[q] == sh[q]) continue;
        uint32_t i = (uint32_t)(r.off + q);
        sh[q] = m[q];
        R.committed[i] = m[q];
        rc_mark_page(i);
      }
    }
  }
}

// Barrier: everything written becomes visible to everybody.
void rc_commit_all(const char* file, int line) {
  if (!R.on) return;
  rc_learn();
  for (uint32_t i : R.dirty) {
    rc_set(i, R.committed[i]);
    R.owner[i] = 0;
  }
  rc_clear_interval();
  R.view = 0;
  R.since_file = file;
  R.since_line = line;
}

// __syncwarp: the plain writes of the group's lanes become visible to everybody.
void rc_commit_lanes(int w, unsigned group) {
  if (!R.on) return;
  bool any = false;
  for (unsigned m = group; m; m &= m - 1) {
    uint32_t th = (uint32_t)(w * 32 + __builtin_ctz(m)) + 1;
    for (uint32_t i : R.owned[th]) {
      if (!(R.owner[i] & kAtomicBit)) R.owner[i] = 0;
      rc_set(i, R.committed[i]);
      any = true;
    }
    R.owned[th].clear();
  }
  if (!any) return;
  size_t keep = 0;
  for (uint32_t i : R.dirty)
    if (R.owner[i]) R.dirty[keep++] = i;
  R.dirty.resize(keep);
  keep = 0;
  for (uint32_t th : R.owners)
    if (!R.owned[th].empty()) R.owners[keep++] = th;
  R.owners.resize(keep);
}

// ---- switching -------------------------------------------------------------------------------------------------
void refresh_access_checks();  // (below, with the global-memory check's state)

inline void set_current(Thread* t) {
  E.cur = t;
  g_builtin.thread_idx = t->tid;
  refresh_access_checks();
}

void fiber_entry(void* arg);

// `dying`: the fiber we leave will never be resumed (ASan may drop its fake stack).
inline void asan_before_switch(bool dying, const void* to_lo, size_t to_size) {
#ifdef FGEMU_ASAN
  void** save = E.cur_fiber ? &E.cur_fiber->asan_fake : &E.main_asan_fake;
  __sanitizer_start_switch_fiber(dying ? nullptr : save, to_lo, to_size);
#else
  (void)dying, (void)to_lo, (void)to_size;
#endif
}
inline void asan_after_switch() {
#ifdef FGEMU_ASAN
  __sanitizer_finish_switch_fiber(E.cur_fiber ? E.cur_fiber->asan_fake : E.main_asan_fake, nullptr, nullptr);
#endif
}

inline void switch_to(Thread* t, bool dying = false) {
  Ctx* from = E.cur_fiber ? &E.cur_fiber->ctx : &E.main_ctx;
  rc_begin(t);
  asan_before_switch(dying, t->fiber->stack_lo, stack_size() - t->fiber->color);
  set_current(t);
  t->state = kRunning;
  E.cur_fiber = t->fiber;
  ctx_switch(from, &t->fiber->ctx);
  asan_after_switch();
}

inline void switch_to_main(bool dying = false) {
  Ctx* from = &E.cur_fiber->ctx;
  asan_before_switch(dying, E.main_stack_lo, E.main_stack_size);
  E.cur_fiber = nullptr;
  E.cur = nullptr;
  g_access_checks = 0;
  ctx_switch(from, &E.main_ctx);
  asan_after_switch();
}

// A fault detected while a fiber runs: record it (first one wins), then abandon the fiber (its stack is simply
// reused later). Two separate statements at every call site, so that no temporary is alive on the abandoned stack.
void record_failure(const std::string& msg) {
  if (!E.failed) {
    E.failed = true;
    E.error = msg;
  }
}
[[noreturn]] void abandon_fiber() {
  switch_to_main(true);
  abort();  // never resumed
}

inline void push_ready(Thread* t) {
  t->state = kReady;
  int idx = E.rhead + E.rcount;
  if (idx >= E.nthreads) idx -= E.nthreads;
  E.ready[idx] = t;
  ++E.rcount;
}
inline Thread* pop_ready() {
  if (!E.rcount) return nullptr;
  Thread* t = E.ready[E.rhead];
  if (++E.rhead == E.nthreads) E.rhead = 0;
  --E.rcount;
  return t;
}

// Starts the next unstarted thread on a fresh fiber (used when the current thread blocks).
Thread* start_on_new_fiber() {
  Thread* t = &E.threads[(size_t)E.order[(size_t)E.next_unstarted++]];
  Fiber* f;
  if (!E.free_fibers.empty()) {
    f = E.free_fibers.back();
    E.free_fibers.pop_back();
  } else {
    f = fiber_at(E.fiber_base + E.fibers_used++);
  }
  f->thread = t;
  t->fiber = f;
#ifdef FGEMU_ASAN
  __asan_unpoison_memory_region(f->stack_lo, stack_size());
#endif
  ctx_init(&f->ctx, f->stack_lo, stack_size() - f->color, &fiber_entry, f);
  return t;
}

// The current thread has recorded why it waits; run somebody else until it is made ready and resumed.
void block_current() {
  Thread* n = pop_ready();
  if (!n && E.next_unstarted < E.nthreads) n = start_on_new_fiber();
  if (n)
    switch_to(n);
  else
    switch_to_main();
  // resumed by whoever made us ready; E.cur == this thread again
}

Thread* current_or_throw(const char* what) {
  if (!E.active || !E.cur) throw std::logic_error(std::string("fgemu: ") + what + " called outside a running kernel");
  return E.cur;
}

// ---- warp collectives ------------------------------------------------------------------------------------------
bool is_shfl(int k) { return k == kShflIdx || k == kShflUp || k == kShflDown || k == kShflXor; }

uint64_t size_mask(int size) { return size >= 8 ? ~0ull : ((1ull << (8 * size)) - 1ull); }

void release_lanes(WarpState& ws, int w, unsigned lanes) {
  Thread* base = &E.threads[(size_t)w * 32];
  for (int k = 0; k < 32; ++k) {
    int lane = g_schedule == kScheduleReverse ? 31 - k : k;
    if (!((lanes >> lane) & 1u)) continue;
    Thread* t = base + lane;
    if (t == E.cur)
      t->state = kRunning;
    else
      push_ready(t);
  }
  (void)ws;
}

// Executes the collective for the lanes `group` (all waiting with the same kind and mask).
void complete_group(int w, unsigned group) {
  Thread* base = &E.threads[(size_t)w * 32];
  Thread* first = base + __builtin_ctz(group);
  const int kind = first->w_kind;
  const int size = first->w_size;
  const uint64_t poison = size_mask(size);  // value read from a lane that does not take part: all ones (NaN)
  switch (kind) {
    case kShflIdx:
    case kShflUp:
    case kShflDown:
    case kShflXor: {
      for (unsigned m = group; m; m &= m - 1) {
        int lane = __builtin_ctz(m);
        Thread* t = base + lane;
        // PTX shfl.sync semantics with c = ((32 - width) << 8) | clamp, as CUDA's __shfl*_sync build it.
        int width = t->w_width;
        unsigned segmask = (unsigned)(32 - width) & 31u;
        unsigned b = (unsigned)t->w_param & 31u;
        unsigned cval = (kind == kShflUp) ? 0u : 31u;
        int max_lane = (int)(((unsigned)lane & segmask) | (cval & ~segmask));
        int min_lane = (int)((unsigned)lane & segmask);
        int j = lane;
        bool pval = true;
        switch (kind) {
          case kShflUp: j = lane - (int)b; pval = j >= max_lane; break;
          case kShflDown: j = lane + (int)b; pval = j <= max_lane; break;
          case kShflXor: j = lane ^ (int)b; pval = j <= max_lane; break;
          default: j = min_lane | (int)(b & ~segmask); pval = j <= max_lane; break;
        }
        if (!pval) j = lane;
        uint64_t v = ((group >> j) & 1u) ? base[j].w_value : poison;
        t->w_result.value = v;
        t->w_result.pred = 0;
      }
      break;
    }
    case kBallot:
    case kAny:
    case kAll:
    case kUni: {
      unsigned ballot = 0;
      for (unsigned m = group; m; m &= m - 1) {
        int lane = __builtin_ctz(m);
        if (base[lane].w_value) ballot |= 1u << lane;
      }
      uint64_t r = 0;
      if (kind == kBallot) r = ballot;
      if (kind == kAny) r = ballot != 0;
      if (kind == kAll) r = ballot == group;
      if (kind == kUni) r = ballot == 0 || ballot == group;
      for (unsigned m = group; m; m &= m - 1) base[__builtin_ctz(m)].w_result = WarpResult{r, 0};
      break;
    }
    case kSyncwarp:
      for (unsigned m = group; m; m &= m - 1) base[__builtin_ctz(m)].w_result = WarpResult{0, 0};
      rc_commit_lanes(w, group);
      break;
    case kExchange: {  // every lane's bytes to every lane (the sizes were checked equal in try_group)
      const size_t bytes = (size_t)first->w_param;
      for (unsigned m = group; m; m &= m - 1) {
        Thread* t = base + __builtin_ctz(m);
        unsigned char* all = static_cast<unsigned char*>(reinterpret_cast<ExchangeArgs*>(t->w_value)->all);
        for (int j = 0; j < 32; ++j) {
          if ((group >> j) & 1u)
            std::memcpy(all + j * bytes, reinterpret_cast<ExchangeArgs*>(base[j].w_value)->mine, bytes);
          else
            std::memset(all + j * bytes, 0xFF, bytes);
        }
        t->w_result = WarpResult{0, 0};
      }
      break;
    }
    case kMatchAny:
    case kMatchAll: {
      bool all_equal = true;
      for (unsigned m = group; m; m &= m - 1) {
        int lane = __builtin_ctz(m);
        unsigned same = 0;
        for (unsigned k = group; k; k &= k - 1) {
          int o = __builtin_ctz(k);
          if (base[o].w_value == base[lane].w_value) same |= 1u << o;
        }
        if (same != group) all_equal = false;
        base[lane].w_result = WarpResult{same, 0};
      }
      if (kind == kMatchAll)
        for (unsigned m = group; m; m &= m - 1)
          base[__builtin_ctz(m)].w_result = WarpResult{all_equal ? group : 0u, all_equal ? 1 : 0};
      break;
    }
    default: {  // __reduce_*_sync
      uint64_t acc = 0;
      bool firstv = true;
      for (unsigned m = group; m; m &= m - 1) {
        uint32_t u = (uint32_t)base[__builtin_ctz(m)].w_value;
        int32_t i = (int32_t)u;
        if (firstv) { acc = u; firstv = false; continue; }
        uint32_t a = (uint32_t)acc;
        switch (kind) {
          case kReduceAddU:
          case kReduceAddI: a = a + u; break;
          case kReduceMinU: a = u < a ? u : a; break;
          case kReduceMinI: a = (uint32_t)(i < (int32_t)a ? i : (int32_t)a); break;
          case kReduceMaxU: a = u > a ? u : a; break;
          case kReduceMaxI: a = (uint32_t)(i > (int32_t)a ? i : (int32_t)a); break;
          case kReduceAnd: a &= u; break;
          case kReduceOr: a |= u; break;
          case kReduceXor: a ^= u; break;
        }
        acc = a;
      }
      for (unsigned m = group; m; m &= m - 1) base[__builtin_ctz(m)].w_result = WarpResult{acc, 0};
      break;
    }
  }
  WarpState& ws = E.warps[w];
  ws.at_op &= ~group;
  release_lanes(ws, w, group);
}

// Tries to complete the collective of the lanes waiting with mask `mask`. Returns false when it must keep waiting.
// A lane needed by the mask that waits at a different collective is a fault (CUDA: undefined behaviour / hang).
void try_group(int w, unsigned mask) {
  WarpState& ws = E.warps[w];
  unsigned need = mask & ws.existing & ~ws.exited;
  if (!need || (ws.at_op & need) != need) return;
  Thread* base = &E.threads[(size_t)w * 32];
  Thread* ref = nullptr;
  for (unsigned m = need; m; m &= m - 1) {
    Thread* t = base + __builtin_ctz(m);
    if (t->w_mask == mask) { ref = t; break; }
  }
  if (!ref) return;
  for (unsigned m = need; m; m &= m - 1) {
    Thread* t = base + __builtin_ctz(m);
    bool same_kind = t->w_kind == ref->w_kind || (t->w_kind == kSyncwarp && ref->w_kind == kSyncwarp);
    if (t->w_mask != mask || !same_kind ||
        (!is_shfl(t->w_kind) && t->w_size != ref->w_size && ref->w_kind >= kMatchAny && ref->w_kind <= kMatchAll) ||
        (ref->w_kind == kExchange && t->w_param != ref->w_param)) {
      std::string msg = launch_prefix() + ": warp collectives do not match in " + where_block() + ", warp " +
                        std::to_string(w) + ": lane " + std::to_string(ref->lane) + " waits at " +
                        warp_name(ref->w_kind) + " (" + fmt_site(ref->w_file, ref->w_line) + ") with mask " +
                        fmt_mask(ref->w_mask) + ", lane " + std::to_string(t->lane) + " at " + warp_name(t->w_kind) +
                        " (" + fmt_site(t->w_file, t->w_line) + ") with mask " + fmt_mask(t->w_mask) +
                        "; every non-exited lane named in a mask must execute the same intrinsic with the same mask";
      E.failed = true;
      E.error = msg;
      return;
    }
  }
  complete_group(w, need);
}

// __activemask groups form when no lane of the warp can still arrive: every existing lane has exited or waits.
void try_active(int w) {
  WarpState& ws = E.warps[w];
  if (!ws.at_active) return;
  unsigned blocked = ws.exited | ws.at_bar | ws.at_op | ws.at_active;
  if ((blocked & ws.existing) != ws.existing) return;
  Thread* base = &E.threads[(size_t)w * 32];
  unsigned left = ws.at_active;
  while (left) {
    Thread* ref = base + __builtin_ctz(left);
    unsigned group = 0;
    for (unsigned m = left; m; m &= m - 1) {
      Thread* t = base + __builtin_ctz(m);
      if (t->w_line == ref->w_line && (t->w_file == ref->w_file || strcmp(t->w_file, ref->w_file) == 0))
        group |= 1u << t->lane;
    }
    for (unsigned m = group; m; m &= m - 1) base[__builtin_ctz(m)].w_result = WarpResult{group, 0};
    left &= ~group;
    ws.at_active &= ~group;
    release_lanes(ws, w, group);
  }
}

// After lanes of warp w exited: masks waiting for them may now be complete.
void warp_lane_gone(int w) {
  WarpState& ws = E.warps[w];
  if (ws.at_op) {
    Thread* base = &E.threads[(size_t)w * 32];
    unsigned tried_masks[32];
    int ntried = 0;
    for (unsigned m = ws.at_op; m && !E.failed; m &= m - 1) {
      Thread* t = base + __builtin_ctz(m);
      if (t->state != kAtWarp) continue;
      bool seen = false;
      for (int i = 0; i < ntried; ++i) seen |= tried_masks[i] == t->w_mask;
      if (seen) continue;
      tried_masks[ntried++] = t->w_mask;
      try_group(w, t->w_mask);
    }
  }
  if (!E.failed) try_active(w);
}

// ---- block barrier ---------------------------------------------------------------------------------------------
void release_barrier() {
  int r = 0;
  switch (E.bar_kind) {
    case kBarCount: r = E.bar_true; break;
    case kBarAnd: r = E.bar_true == E.nthreads; break;
    case kBarOr: r = E.bar_true > 0; break;
    default: r = 0; break;
  }
  E.bar_result = r;
  ++E.bar_epoch;
  g_spins = 0;
  rc_commit_all(E.bar_file, E.bar_line);
  for (int w = 0; w < E.nwarps; ++w) E.warps[w].at_bar = 0;
  for (int k = 0; k < E.nthreads; ++k) {
    Thread& t = E.threads[(size_t)E.order[(size_t)k]];
    if (t.state != kAtBar) continue;
    if (&t == E.cur)
      t.state = kRunning;
    else
      push_ready(&t);
  }
  E.n_at_bar = 0;
}

int barrier(int kind, int pred, const char* file, int line) {
  Thread* t = current_or_throw(bar_name(kind));
  rc_end(t);
  if (E.failed) abandon_fiber();
  t->state = kAtBar;
  t->bar_file = file;
  t->bar_line = line;
  t->bar_kind = kind;
  t->bar_pred = pred;
  if (E.n_at_bar == 0) {
    E.bar_file = file;
    E.bar_line = line;
    E.bar_kind = kind;
    E.bar_true = 0;
    E.bar_mismatch = false;
  } else if (line != E.bar_line || kind != E.bar_kind || (file != E.bar_file && strcmp(file, E.bar_file) != 0)) {
    E.bar_mismatch = true;
  }
  E.bar_true += pred ? 1 : 0;
  ++E.n_at_bar;
  WarpState& ws = E.warps[t->warp];
  ws.at_bar |= 1u << t->lane;
  if (ws.at_active) try_active(t->warp);
  if (E.failed) abandon_fiber();
  if (E.n_at_bar == E.nthreads && !E.bar_mismatch) {
    release_barrier();  // the last thread to arrive continues directly
    rc_begin(t);
    return E.bar_result;
  }
  block_current();
  return E.bar_result;
}

// ---- cp.async: copies land at the matching wait_group -----------------------------------------------------------
// Per thread (keyed by its Thread, whose address is stable while the block runs): the copies issued and not yet
// landed, each with its group (the number of commits before it). The destination holds the launch's fill byte from
// the issue until the copy lands, so reading it before the wait reads poison, not the data.
struct AsyncCopy {
  unsigned char* dst;
  unsigned char data[16];
  int bytes;
  unsigned group;
};
struct AsyncQueue {
  std::vector<AsyncCopy> pending;
  unsigned committed = 0;
};
std::unordered_map<const Thread*, AsyncQueue> g_async;

void async_clear() { g_async.clear(); }

void async_land(AsyncQueue& q, unsigned groups_below) {
  size_t keep = 0;
  for (size_t i = 0; i < q.pending.size(); ++i) {
    AsyncCopy& c = q.pending[i];
    if (c.group < groups_below)
      memcpy(c.dst, c.data, (size_t)c.bytes);
    else
      q.pending[keep++] = c;
  }
  q.pending.resize(keep);
}

// ---- thread exit -----------------------------------------------------------------------------------------------
void thread_exited(Thread* t) {
  auto async = g_async.find(t);
  if (async != g_async.end()) {  // copies still in flight land (nothing of this thread can read them any more)
    async_land(async->second, ~0u);
    g_async.erase(async);
  }
  t->state = kExited;
  ++E.n_exited;
  WarpState& ws = E.warps[t->warp];
  ws.exited |= 1u << t->lane;
  if (ws.at_op || ws.at_active) warp_lane_gone(t->warp);
}

void fiber_entry(void* arg) {
  Fiber* f = static_cast<Fiber*>(arg);
#ifdef FGEMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);  // first entry: nothing saved on this stack yet
#endif
  for (;;) {
    Thread* t = f->thread;
    bool threw = false;
    try {
      E.d->invoke(E.d->payload);
    } catch (const std::exception& e) {
      threw = true;
      E.error = launch_prefix() + ": " + where_thread(t) + " threw an exception: " + e.what();
    } catch (...) {
      threw = true;
      E.error = launch_prefix() + ": " + where_thread(t) + " threw an exception";
    }
    if (threw) {
      E.failed = true;
      switch_to_main(true);
      abort();
    }
    rc_end(t);
    thread_exited(t);
    if (E.failed) abandon_fiber();
    if (Thread* n = pop_ready()) {
      // Resume a waiting thread first (keeps the number of live stacks small); this stack becomes free.
      f->thread = nullptr;
      E.free_fibers.push_back(f);
      switch_to(n, true);
      abort();  // a finished fiber is never resumed
    }
    if (E.next_unstarted < E.nthreads) {
      // Hand this stack straight to the next thread: no context switch at all for barrier-free blocks.
      Thread* n = &E.threads[(size_t)E.order[(size_t)E.next_unstarted++]];
      rc_begin(n);
      n->fiber = f;
      f->thread = n;
      set_current(n);
      n->state = kRunning;
      continue;
    }
    f->thread = nullptr;
    switch_to_main(true);
    abort();  // a finished fiber is never resumed
  }
}

// ---- diagnosis when no thread can run --------------------------------------------------------------------------
std::string describe_lane_state(const Thread& t) {
  switch (t.state) {
    case kExited: return "exited";
    case kAtBar: return std::string("at ") + bar_name(t.bar_kind) + " (" + fmt_site(t.bar_file, t.bar_line) + ")";
    case kAtWarp:
      return std::string("at ") + warp_name(t.w_kind) + " (" + fmt_site(t.w_file, t.w_line) + ") with mask " +
             fmt_mask(t.w_mask);
    case kAtActive: return "at __activemask() (" + fmt_site(t.w_file, t.w_line) + ")";
    default: return "running";
  }
}

std::string diagnose_stuck() {
  std::string msg = launch_prefix() + ": ";
  int n_warp_wait = 0;
  for (const Thread& t : E.threads) n_warp_wait += (t.state == kAtWarp || t.state == kAtActive);
  if (n_warp_wait) {
    // Report the first warp that cannot make progress.
    for (int w = 0; w < E.nwarps; ++w) {
      const WarpState& ws = E.warps[w];
      if (!ws.at_op && !ws.at_active) continue;
      const Thread* base = &E.threads[(size_t)w * 32];
      const Thread* waiter = base + __builtin_ctz(ws.at_op | ws.at_active);
      unsigned waiting = ws.at_op | ws.at_active;
      msg += "deadlock in " + where_block() + ", warp " + std::to_string(w) + ": lane" +
             (__builtin_popcount(waiting) > 1 ? "s " : " ") + fmt_lanes(waiting) + " " + describe_lane_state(*waiter);
      unsigned need = waiter->state == kAtWarp ? (waiter->w_mask & ws.existing & ~ws.exited) : ws.existing;
      unsigned missing = need & ~ws.at_op & ~ws.at_active;
      if (missing) {
        const Thread& m = base[__builtin_ctz(missing)];
        msg += ", but lane" + std::string(__builtin_popcount(missing) > 1 ? "s " : " ") + fmt_lanes(missing) +
               " named in the mask " + describe_lane_state(m);
      }
      msg += "; warp collectives need every non-exited lane of their mask to execute them";
      return msg;
    }
  }
  // Only block barriers left.
  if (E.n_exited > 0) {
    const Thread* ex = nullptr;
    for (const Thread& t : E.threads)
      if (t.state == kExited) { ex = &t; break; }
    msg += std::string(bar_name(E.bar_kind)) + " at " + fmt_site(E.bar_file, E.bar_line) + " in " + where_block() +
           " was reached by only " + std::to_string(E.n_at_bar) + " of " + std::to_string(E.nthreads) + " threads; " +
           std::to_string(E.n_exited) + " thread" + (E.n_exited > 1 ? "s" : "") + " (e.g. thread " +
           fmt_dim(dim3(ex->tid)) + ") exited without reaching it (divergent __syncthreads)";
    if (E.bar_mismatch) msg += "; the waiting threads are also at different barriers";
    return msg;
  }
  // Different barriers: list the sites.
  struct Site { const char* file; int line; int kind; int count; uint3 first; };
  std::vector<Site> sites;
  for (const Thread& t : E.threads) {
    if (t.state != kAtBar) continue;
    bool found = false;
    for (Site& s : sites)
      if (s.line == t.bar_line && s.kind == t.bar_kind && (s.file == t.bar_file || !strcmp(s.file, t.bar_file))) {
        ++s.count;
        found = true;
        break;
      }
    if (!found) sites.push_back(Site{t.bar_file, t.bar_line, t.bar_kind, 1, t.tid});
  }
  msg += "threads of " + where_block() + " wait at different barriers:";
  for (size_t i = 0; i < sites.size(); ++i)
    msg += std::string(i ? "," : "") + " " + std::to_string(sites[i].count) + " thread" +
           (sites[i].count > 1 ? "s" : "") + " (first " + fmt_dim(dim3(sites[i].first)) + ") at " +
           bar_name(sites[i].kind) + " " + fmt_site(sites[i].file, sites[i].line);
  msg += " (divergent __syncthreads)";
  return msg;
}

// ---- TLS (shared memory) handling ------------------------------------------------------------------------------
struct TlsModule {
  bool has = false;
  size_t modid = 0;
  size_t size = 0;
  std::string file;     // the module's file ("" for the main program: /proc/self/exe)
  uintptr_t bias = 0;   // its load address (symbol values + bias = run-time addresses)
  std::string build_id;  // its GNU build id as loaded ("" if none)
};

// The NT_GNU_BUILD_ID descriptor among the notes in [p, p + n), or "".
std::string gnu_build_id(const unsigned char* p, size_t n) {
  size_t at = 0;
  while (at + sizeof(ElfW(Nhdr)) <= n) {
    ElfW(Nhdr) h;
    memcpy(&h, p + at, sizeof h);
    const size_t name = at + sizeof h, desc = name + ((h.n_namesz + 3) & ~3u), next = desc + ((h.n_descsz + 3) & ~3u);
    if (next > n || next <= at) break;
    if (h.n_type == NT_GNU_BUILD_ID && h.n_namesz == 4 && !memcmp(p + name, "GNU", 4))
      return std::string(reinterpret_cast<const char*>(p + desc), h.n_descsz);
    at = next;
  }
  return std::string();
}

std::unordered_map<const void*, TlsModule> g_tls_modules;

TlsModule find_tls_module(const void* addr) {
  struct Q {
    uintptr_t a;
    TlsModule m;
    bool found;
  } q{reinterpret_cast<uintptr_t>(addr), TlsModule{}, false};
  dl_iterate_phdr(
      [](struct dl_phdr_info* info, size_t, void* data) -> int {
        Q* qq = static_cast<Q*>(data);
        bool contains = false;
        const ElfW(Phdr)* tls = nullptr;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type == PT_LOAD) {
            uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
            if (qq->a >= lo && qq->a < lo + ph.p_memsz) contains = true;
          } else if (ph.p_type == PT_TLS) {
            tls = &ph;
          }
        }
        if (!contains) return 0;
        qq->found = true;
        if (tls && tls->p_memsz) {
          qq->m.has = true;
          qq->m.modid = info->dlpi_tls_modid;
          qq->m.size = tls->p_memsz;
          qq->m.file = info->dlpi_name ? info->dlpi_name : "";
          qq->m.bias = info->dlpi_addr;
          for (int i = 0; i < info->dlpi_phnum && qq->m.build_id.empty(); ++i)
            if (info->dlpi_phdr[i].p_type == PT_NOTE)
              qq->m.build_id = gnu_build_id(
                  reinterpret_cast<const unsigned char*>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr),
                  info->dlpi_phdr[i].p_memsz);
        }
        return 1;
      },
      &q);
  return q.m;
}

void* tls_block(size_t modid) {
  struct {
    unsigned long module, offset;
  } ti{modid, 0};
  return __tls_get_addr(&ti);
}

// ---- the part of the thread-local block a launch may touch --------------------------------------------------------
// The module's thread-local block holds every kernel's `__shared__` variables (1.25 MB in fastgan's _C), and filling
// it at each block start, parking it at each block switch, saving it around each launch and comparing it under the
// race check cost in proportion to its size. A kernel never touches another kernel's function-local `__shared__`
// variables: a __global__ function is not called from device code (nvcc refuses it), so its body runs only in its
// own launches. Two facts of the module's ELF file tell which variables those are: every __global__ function is
// listed in `__patchable_function_entries` (cuda_emu.h gives each `patchable_function_entry(1, 0)`: one nop at its
// entry), and the symbol table names each function-local static after its function (`_ZZ<encoding>E<name>` for the
// function `_Z<encoding>`; in the Itanium grammar the E ends the encoding, so the prefix names one function name). A
// launch leaves out the variables of every other kernel; it keeps its own, device helpers' statics (shared by the
// kernels that call them), namespace-scope variables, and a variable whose name fits several kernels (kernels of the
// same name in anonymous namespaces of two files: which one it belongs to is not known). Nothing is left out for a
// kernel address the file does not list, or a module without those sections (stripped, or kernels compiled without
// cuda_emu.h's __global__), or whose file is not the one loaded (the build ids differ, e.g. rebuilt in place).
struct ModuleSmem {
  bool read = false;
  struct Var {
    std::vector<const void*> kernels;  // the kernels whose local it may be (one, unless names collide)
    size_t lo, hi;                     // offsets in the module's TLS block
  };
  std::vector<Var> vars;                   // kernels' function-local thread-local statics
  struct Named {
    size_t lo, hi;
    std::string name;  // mangled
  };
  std::vector<Named> tls;                  // every thread-local variable (for messages)
  std::vector<const void*> kernel_addrs;   // the kernels (sorted)
  std::unordered_map<const void*, std::vector<std::pair<size_t, size_t>>> skip;  // kernel -> the others', merged
};
std::unordered_map<size_t, ModuleSmem> g_module_smem;  // by TLS module id

void read_module_symbols(ModuleSmem& m, const TlsModule& mod) {
  const std::string path = mod.file.empty() ? std::string("/proc/self/exe") : mod.file;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st;
  void* map = (fstat(fd, &st) == 0 && st.st_size > 0) ? mmap(nullptr, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0)
                                                      : MAP_FAILED;
  close(fd);
  if (map == MAP_FAILED) return;
  const size_t len = (size_t)st.st_size;
  const unsigned char* b = static_cast<const unsigned char*>(map);
  auto in = [&](size_t off, size_t n) { return off <= len && n <= len - off; };
  const ElfW(Ehdr)* eh = reinterpret_cast<const ElfW(Ehdr)*>(b);
  const ElfW(Shdr)* sh = nullptr;
  if (in(0, sizeof *eh) && memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
      eh->e_shentsize == sizeof(ElfW(Shdr)) && in(eh->e_shoff, (size_t)eh->e_shnum * sizeof(ElfW(Shdr))) &&
      eh->e_shstrndx < eh->e_shnum)
    sh = reinterpret_cast<const ElfW(Shdr)*>(b + eh->e_shoff);
  // the file must be the module that is loaded (its sections are read at the module's addresses below)
  std::string file_id;
  std::vector<std::pair<uintptr_t, uintptr_t>> loads;  // PT_LOAD [vaddr, vaddr + memsz)
  if (sh && eh->e_phentsize == sizeof(ElfW(Phdr)) && in(eh->e_phoff, (size_t)eh->e_phnum * sizeof(ElfW(Phdr)))) {
    const ElfW(Phdr)* ph = reinterpret_cast<const ElfW(Phdr)*>(b + eh->e_phoff);
    for (size_t i = 0; i < eh->e_phnum; ++i) {
      if (ph[i].p_type == PT_LOAD) loads.emplace_back(ph[i].p_vaddr, ph[i].p_vaddr + ph[i].p_memsz);
      if (ph[i].p_type == PT_NOTE && file_id.empty() && in(ph[i].p_offset, ph[i].p_filesz))
        file_id = gnu_build_id(b + ph[i].p_offset, ph[i].p_filesz);
    }
  }
  if (file_id.empty() || file_id != mod.build_id) sh = nullptr;
  const ElfW(Shdr)* symtab = nullptr;
  std::vector<uintptr_t> entries;  // the kernels' entry points (run-time addresses)
  for (size_t i = 0; sh && i < eh->e_shnum; ++i) {
    const ElfW(Shdr)& names = sh[eh->e_shstrndx];
    if (sh[i].sh_type == SHT_SYMTAB && sh[i].sh_link < eh->e_shnum) symtab = &sh[i];
    static const char kEntries[] = "__patchable_function_entries";
    if (in(names.sh_offset, names.sh_size) && sh[i].sh_name < names.sh_size &&
        names.sh_size - sh[i].sh_name >= sizeof kEntries && (sh[i].sh_flags & SHF_ALLOC) &&
        !memcmp(b + names.sh_offset + sh[i].sh_name, kEntries, sizeof kEntries)) {
      bool loaded = false;
      for (const auto& [lo, hi] : loads)
        loaded |= sh[i].sh_addr >= lo && sh[i].sh_addr <= hi && sh[i].sh_size <= hi - sh[i].sh_addr;
      if (!loaded) continue;
      // read where the module is loaded: the entries are relocated there
      const uintptr_t* e = reinterpret_cast<const uintptr_t*>(mod.bias + sh[i].sh_addr);
      entries.insert(entries.end(), e, e + sh[i].sh_size / sizeof(uintptr_t));
    }
  }
  if (symtab && !entries.empty()) {
    const ElfW(Shdr)& str = sh[symtab->sh_link];
    if (in(symtab->sh_offset, symtab->sh_size) && in(str.sh_offset, str.sh_size) && str.sh_size > 0) {
      const char* strtab = reinterpret_cast<const char*>(b + str.sh_offset);
      auto name_of = [&](const ElfW(Sym)& y) -> const char* {
        return y.st_name < str.sh_size && memchr(strtab + y.st_name, 0, str.sh_size - y.st_name) ? strtab + y.st_name
                                                                                                  : "";
      };
      const ElfW(Sym)* sym = reinterpret_cast<const ElfW(Sym)*>(b + symtab->sh_offset);
      const size_t nsym = symtab->sh_size / sizeof(ElfW(Sym));
      std::sort(entries.begin(), entries.end());
      // kernel functions: the mangled functions whose code holds an entry (the nop may follow an endbr64)
      std::vector<std::pair<std::string, const void*>> prefixes;  // "_ZZ<encoding>E" -> kernel
      for (size_t k = 0; k < nsym; ++k) {
        const ElfW(Sym)& y = sym[k];
        const char* n = name_of(y);
        if (ELF64_ST_TYPE(y.st_info) != STT_FUNC || y.st_shndx == SHN_UNDEF || strncmp(n, "_Z", 2)) continue;
        const uintptr_t lo = mod.bias + y.st_value, hi = lo + std::max<size_t>(y.st_size, 1);
        auto e = std::lower_bound(entries.begin(), entries.end(), lo);
        if (e != entries.end() && *e < hi) {
          prefixes.emplace_back("_ZZ" + std::string(n + 2) + "E", reinterpret_cast<const void*>(lo));
          m.kernel_addrs.push_back(reinterpret_cast<const void*>(lo));
        }
      }
      std::sort(m.kernel_addrs.begin(), m.kernel_addrs.end());
      for (size_t k = 0; k < nsym; ++k) {
        const ElfW(Sym)& y = sym[k];
        const char* n = name_of(y);
        if (ELF64_ST_TYPE(y.st_info) != STT_TLS || y.st_shndx == SHN_UNDEF || !y.st_size ||
            y.st_value + y.st_size > mod.size)
          continue;
        m.tls.push_back(ModuleSmem::Named{(size_t)y.st_value, (size_t)(y.st_value + y.st_size), n});
        if (strncmp(n, "_ZZ", 3)) continue;
        ModuleSmem::Var v{{}, (size_t)y.st_value, (size_t)(y.st_value + y.st_size)};
        for (const auto& [prefix, kernel] : prefixes)
          if (!strncmp(n, prefix.c_str(), prefix.size()) &&
              std::find(v.kernels.begin(), v.kernels.end(), kernel) == v.kernels.end())
            v.kernels.push_back(kernel);
        if (!v.kernels.empty()) m.vars.push_back(std::move(v));
      }
    }
  }
  munmap(map, len);
}

const ModuleSmem* g_launch_smem = nullptr;  // the running launch's module (messages)

std::string describe_static_smem(size_t off) {
  if (g_launch_smem)
    for (const ModuleSmem::Named& v : g_launch_smem->tls)
      if (off >= v.lo && off < v.hi) {  // (static ranges never reach the dynamic buffer: a hole in them)
        int status = 0;
        char* d = abi::__cxa_demangle(v.name.c_str(), nullptr, nullptr, &status);
        std::string name = status == 0 && d ? d : v.name;
        free(d);
        return "byte " + std::to_string(off - v.lo) + " of `" + name + "`";
      }
  return "byte " + std::to_string(off) + " of the kernel module's thread-local block";
}

// The TLS-block ranges (offsets, sorted, merged) a launch of `kernel` leaves out: the other kernels' variables.
const std::vector<std::pair<size_t, size_t>>& smem_skip(const TlsModule& mod, const void* kernel) {
  ModuleSmem& m = g_module_smem[mod.modid];
  if (!m.read) {
    m.read = true;
    read_module_symbols(m, mod);
  }
  auto it = m.skip.find(kernel);
  if (it != m.skip.end()) return it->second;
  std::vector<std::pair<size_t, size_t>> r;
  if (std::binary_search(m.kernel_addrs.begin(), m.kernel_addrs.end(), kernel))
    for (const ModuleSmem::Var& v : m.vars)
      if (std::find(v.kernels.begin(), v.kernels.end(), kernel) == v.kernels.end()) r.emplace_back(v.lo, v.hi);
  std::sort(r.begin(), r.end());
  std::vector<std::pair<size_t, size_t>>& merged = m.skip[kernel];
  for (const auto& x : r)
    if (!merged.empty() && x.first <= merged.back().second)
      merged.back().second = std::max(merged.back().second, x.second);
    else
      merged.push_back(x);
  return merged;
}

struct ShmemPlan {
  unsigned char* tls = nullptr;  // kernel module's TLS block on this thread
  size_t tls_size = 0;
  std::vector<std::pair<unsigned char*, unsigned char*>> ranges;  // the part of it this launch's shared memory is
  unsigned char* dyn = nullptr;  // dynamic shared memory
  size_t dyn_size = 0;           // buffer capacity
  size_t dyn_poison = 0;         // bytes poisoned per block
  bool dyn_inside = false;       // dynamic buffer lies inside the TLS block (then skipped by the bulk fill)
  std::vector<unsigned char> saved;
};
ShmemPlan g_plan;

void poison_range(unsigned char* lo, unsigned char* hi) {
  if (hi > lo) memset(lo, g_poison_byte, (size_t)(hi - lo));
}

// The launch's static shared memory: the module's thread-local block less the dynamic buffer when that lies inside
// it and less the other kernels' variables (smem_skip).
void plan_ranges(const std::vector<std::pair<size_t, size_t>>& skip) {
  ShmemPlan& p = g_plan;
  p.ranges.clear();
  if (!p.tls) return;
  std::vector<std::pair<size_t, size_t>> holes(skip);
  if (p.dyn_inside) {
    const size_t a = (size_t)(p.dyn - p.tls);
    holes.insert(std::lower_bound(holes.begin(), holes.end(), std::make_pair(a, a)), {a, a + p.dyn_size});
  }
  size_t at = 0;
  for (const auto& [lo, hi] : holes) {
    if (lo > at) p.ranges.emplace_back(p.tls + at, p.tls + lo);
    at = std::max(at, hi);
  }
  if (at < p.tls_size) p.ranges.emplace_back(p.tls + at, p.tls + p.tls_size);
}

// Calls f(lo, hi) for each range of a block's shared memory: the launch's static ranges, and the dynamic shared
// memory poisoned per block.
template <typename F>
void for_each_block_range(F&& f) {
  for (const auto& [lo, hi] : g_plan.ranges) f(lo, hi);
  f(g_plan.dyn, g_plan.dyn + g_plan.dyn_poison);
}

void poison_shared() { for_each_block_range(poison_range); }

// The launch's static ranges, between the TLS block and a copy of it (the host thread's values, saved around the
// launch).
void copy_static_ranges(unsigned char* dst, const unsigned char* src) {
  for (const auto& [lo, hi] : g_plan.ranges) {
    const size_t off = (size_t)(lo - g_plan.tls);
    memcpy(dst + off, src + off, (size_t)(hi - lo));
  }
}

// ---- fault signals ---------------------------------------------------------------------------------------------
struct sigaction g_old_segv, g_old_bus;
bool g_signals_installed = false;
int g_use_signals = -1;

void fault_handler(int sig, siginfo_t* si, void*) {
  char buf[768];
  const char* what = sig == SIGBUS ? "bus error" : "segmentation fault";
  const char* extra = "";
  uintptr_t a = reinterpret_cast<uintptr_t>(si ? si->si_addr : nullptr);
  if (E.cur && E.cur->fiber) {
    uintptr_t lo = reinterpret_cast<uintptr_t>(E.cur->fiber->map_base);
    if (a >= lo && a < lo + page_size()) extra = " -- fiber stack overflow (raise FGEMU_STACK_KB)";
  }
  int n;
  if (E.cur)
    n = snprintf(buf, sizeof buf,
                 "fgemu: %s at address %p in kernel '%s', block (%u,%u,%u), thread (%u,%u,%u)%s\n", what,
                 (void*)a, E.d && E.d->name ? E.d->name : "?", g_builtin.block_idx.x, g_builtin.block_idx.y,
                 g_builtin.block_idx.z, E.cur->tid.x, E.cur->tid.y, E.cur->tid.z, extra);
  else
    n = snprintf(buf, sizeof buf, "fgemu: %s at address %p during launch of kernel '%s'\n", what, (void*)a,
                 E.d && E.d->name ? E.d->name : "?");
  if (n > 0) {
    ssize_t ignored = write(2, buf, (size_t)std::min(n, (int)sizeof buf - 1));
    (void)ignored;
  }
  // Hand over to whatever was installed before (faulthandler, default core dump): it runs when the access faults again.
  sigaction(SIGSEGV, &g_old_segv, nullptr);
  sigaction(SIGBUS, &g_old_bus, nullptr);
  g_signals_installed = false;
}

void install_fault_handlers() {
  if (g_use_signals < 0) {
    const char* s = getenv("FGEMU_NO_SIGNALS");
    g_use_signals = !(s && *s && *s != '0');
  }
  if (!g_use_signals) return;
  stack_t cur;
  if (sigaltstack(nullptr, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {
    // Needed to report fiber stack overflows. One leaked 64 KB stack per host thread that launches kernels.
    size_t sz = 64 * 1024;
    void* m = mmap(nullptr, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED) {
      stack_t ss{};
      ss.ss_sp = m;
      ss.ss_size = sz;
      ss.ss_flags = 0;
      sigaltstack(&ss, nullptr);
    }
  }
  struct sigaction sa {};
  sa.sa_sigaction = &fault_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  sigaction(SIGBUS, &sa, &g_old_bus);
  g_signals_installed = true;
}

void remove_fault_handlers() {
  if (!g_signals_installed) return;
  sigaction(SIGSEGV, &g_old_segv, nullptr);
  sigaction(SIGBUS, &g_old_bus, nullptr);
  g_signals_installed = false;
}

// ---- function attributes ---------------------------------------------------------------------------------------
std::mutex g_attr_mutex;
std::unordered_map<const void*, int> g_max_dynamic_smem;

int max_dynamic_smem_for(const void* k) {
  std::lock_guard<std::mutex> g(g_attr_mutex);
  auto it = g_max_dynamic_smem.find(k);
  return it == g_max_dynamic_smem.end() ? (int)kStaticSmemLimit : it->second;
}

// ---- launch ------------------------------------------------------------------------------------------------------
std::string config_error(const LaunchDesc& d) {
  const dim3 g = d.grid, b = d.block;
  std::string pre = std::string("fgemu: kernel '") + (d.name ? d.name : "?") + "' (grid " + fmt_dim(g) + ", block " +
                    fmt_dim(b) + ", dynamic smem " + std::to_string(d.smem) + " B): invalid launch configuration: ";
  if (b.x == 0 || b.y == 0 || b.z == 0) return pre + "block dimensions must be >= 1";
  if (g.x == 0 || g.y == 0 || g.z == 0) return pre + "grid dimensions must be >= 1";
  uint64_t nt = (uint64_t)b.x * b.y * b.z;
  if (nt > (uint64_t)kMaxThreads)
    return pre + std::to_string(nt) + " threads per block exceed the limit " + std::to_string(kMaxThreads);
  if (b.x > 1024) return pre + "blockDim.x = " + std::to_string(b.x) + " exceeds the limit 1024";
  if (b.y > 1024) return pre + "blockDim.y = " + std::to_string(b.y) + " exceeds the limit 1024";
  if (b.z > 64) return pre + "blockDim.z = " + std::to_string(b.z) + " exceeds the limit 64";
  if (g.x > 2147483647u) return pre + "gridDim.x = " + std::to_string(g.x) + " exceeds the limit 2147483647";
  if (g.y > 65535u) return pre + "gridDim.y = " + std::to_string(g.y) + " exceeds the limit 65535";
  if (g.z > 65535u) return pre + "gridDim.z = " + std::to_string(g.z) + " exceeds the limit 65535";
  int maxdyn = max_dynamic_smem_for(d.kernel_id);
  if (d.smem > (size_t)maxdyn) {
    if (maxdyn <= (int)kStaticSmemLimit)
      return pre + std::to_string(d.smem) + " B of dynamic shared memory exceed the " +
             std::to_string(kStaticSmemLimit) +
             " B available without opt-in (call cudaFuncSetAttribute(kernel, "
             "cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) first; sm_90 allows up to " +
             std::to_string(kDynamicSmemOptinLimit) + " B)";
    return pre + std::to_string(d.smem) + " B of dynamic shared memory exceed the " + std::to_string(maxdyn) +
           " B set with cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize)";
  }
  return std::string();
}

// ---- global-memory race check (FGEMU_RACECHECK=1, kernels compiled with the access instrumentation) -----------
// Every load and store of an instrumented kernel (see memcheck.cpp) outside the thread's own stack and shared memory
// is global memory. Per byte the last writer is kept (thread, its block's clock, its barrier interval, atomic or
// not). Ordering between blocks follows CUDA's rule for fences: __threadfence() releases the block's writes made so
// far; a later atomic or volatile store publishes what was released; an atomic or volatile load by another block
// acquires it. Within a block, __syncthreads() orders threads; lanes of one warp are not checked against each other.
// Reported: a read of bytes another thread wrote plainly without that ordering, two unordered writes of the same
// bytes, and a plain write and an atomic update of the same bytes without ordering.
struct GCell {
  uint64_t tid;    // global thread id + 1 (block linear * kMaxThreads + thread linear + 1); 0: never written
  uint32_t clk;    // the writer block's clock at the write
  uint32_t epoch;  // the writer's barrier interval
  uint8_t atomic;
  uint64_t seq;    // atomics: position in the launch's sequence of atomic accesses
};
struct GBlock {
  uint32_t clock = 1;
  std::unordered_map<uint64_t, uint32_t> vc;   // block -> clock of that block this block has acquired
  std::unordered_map<uint64_t, uint32_t> rel;  // what the last __threadfence() released
  std::unordered_map<uintptr_t, uint64_t> atomic_seq;  // address -> this block's last atomic there
};
constexpr size_t kGPageBits = 12;
struct GlobalCheck {
  bool on = false;
  std::unordered_map<uintptr_t, std::unique_ptr<GCell[]>> pages;
  uintptr_t last_pg = ~(uintptr_t)0;
  GCell* last = nullptr;
  std::unordered_map<uint64_t, GBlock> blocks;
  std::unordered_map<uintptr_t, std::unordered_map<uint64_t, uint32_t>> syncs;  // atomic/flag address -> released
  uint64_t seq = 0;
};
GlobalCheck G;

// What the access hooks of the running thread must hand to mem_access beyond a misaligned access (memcheck.cpp reads
// it inline, so the common access costs a load and a test): kAccessAll, every access (the race check; a programmatic
// launch's thread before its grid-dependency sync); kAccessVolatile, volatile ones (the progress points of blocks
// that interleave). Recomputed whenever a thread is switched in and at the grid-dependency sync; may only ever be
// more than needed (mem_access decides in full), never less.
void refresh_access_checks() {
  Thread* t = E.cur;
  unsigned char m = 0;
  if (E.active && t && !E.failed) {
    if (G.on || (E.d->programmatic && !t->grid_dep_synced)) m |= kAccessAll;
    if (g_interleave) m |= kAccessVolatile;
  }
  g_access_checks = m;
}

void gc_begin_launch() {
  G.on = ::fgemu::g_racecheck;
  G.pages.clear();
  G.blocks.clear();
  G.syncs.clear();
  G.last_pg = ~(uintptr_t)0;
  G.last = nullptr;
  G.seq = 0;
}

inline uint64_t gc_block_linear() {
  const uint3 b = g_builtin.block_idx;
  const dim3 g = g_builtin.grid_dim;
  return (uint64_t)b.x + (uint64_t)g.x * ((uint64_t)b.y + (uint64_t)g.y * b.z);
}

inline GCell* gc_cell(uintptr_t a, bool create) {
  const uintptr_t pg = a >> kGPageBits;
  if (pg != G.last_pg) {
    auto it = G.pages.find(pg);
    if (it == G.pages.end()) {
      if (!create) return nullptr;
      it = G.pages.emplace(pg, std::unique_ptr<GCell[]>(new GCell[(size_t)1 << kGPageBits]())).first;
    }
    G.last_pg = pg;
    G.last = it->second.get();
  }
  return G.last + (a & (((uintptr_t)1 << kGPageBits) - 1));
}

std::string gc_who(uint64_t tid) {
  const uint64_t id = tid - 1, blk = id / kMaxThreads, th = id % kMaxThreads;
  const dim3 bd = g_builtin.block_dim;
  uint3 t{(unsigned)(th % bd.x), (unsigned)((th / bd.x) % bd.y), (unsigned)(th / ((uint64_t)bd.x * bd.y))};
  return "thread " + fmt_dim(dim3(t)) + " of block " + fmt_dim(dim3(block_at(blk, g_builtin.grid_dim)));
}

void join_into(std::unordered_map<uint64_t, uint32_t>& dst, const std::unordered_map<uint64_t, uint32_t>& src) {
  for (const auto& kv : src) {
    uint32_t& v = dst[kv.first];
    if (kv.second > v) v = kv.second;
  }
}

// Is the access by the current thread ordered after the write recorded in c?
inline bool gc_ordered(const GCell& c, uint64_t me, uint64_t my_block, const GBlock& gb) {
  if (c.tid == me) return true;
  const uint64_t blk = (c.tid - 1) / kMaxThreads;
  if (blk == my_block) {
    if ((c.tid - 1) % kMaxThreads / 32 == (me - 1) % kMaxThreads / 32) return true;  // same warp: not modelled
    return c.epoch < E.bar_epoch;
  }
  auto it = gb.vc.find(blk);
  return it != gb.vc.end() && it->second >= c.clk;
}

[[noreturn]] void gc_fail(uint64_t me, const char* verb, const void* a, size_t n, uint64_t other, const char* did) {
  char addr[32];
  snprintf(addr, sizeof addr, "%p", a);
  record_failure(launch_prefix() + ": global memory race: " + gc_who(me) + " " + verb + " " + std::to_string(n) +
                 " bytes at " + addr + " that " + gc_who(other) + " " + did + ", unordered. Within a block a "
                 "__syncthreads() must order the two; between blocks the writer needs a __threadfence() before the "
                 "atomic or flag that the other block reads first");
  abandon_fiber();
}

enum GKind { kGRead = 0, kGWrite = 1, kGVolatileRead = 2, kGVolatileWrite = 3, kGAtomic = 4 };

void gc_access(const void* addr, size_t n, int kind) {
  Thread* t = E.cur;
  const uint64_t blk = gc_block_linear();
  const uint64_t me = blk * kMaxThreads + (uint64_t)t->linear + 1;
  GBlock& gb = G.blocks[blk];
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  const bool sync_load = kind == kGVolatileRead || kind == kGAtomic;
  const bool sync_store = kind == kGVolatileWrite || kind == kGAtomic;
  if (sync_load) {
    auto it = G.syncs.find(a);
    if (it != G.syncs.end()) join_into(gb.vc, it->second);
  }
  const bool writes = kind == kGWrite || kind == kGVolatileWrite || kind == kGAtomic;
  // Atomics on one address are ordered among themselves: a block whose own atomic there came later is ordered after
  // the earlier ones (e.g. the last block of a reduction resets the counter the others incremented).
  uint64_t my_seq = 0;
  if (kind == kGAtomic) {
    my_seq = ++G.seq;
  } else {
    auto it = gb.atomic_seq.find(a);
    if (it != gb.atomic_seq.end()) my_seq = it->second;
  }
  for (size_t i = 0; i < n; ++i) {
    GCell* c = gc_cell(a + i, writes);
    if (!c) {
      i += ((size_t)1 << kGPageBits) - 1 - ((a + i) & (((uintptr_t)1 << kGPageBits) - 1));  // skip the page
      continue;
    }
    if (c->tid && !(c->atomic && c->seq < my_seq) && !gc_ordered(*c, me, blk, gb)) {
      if (!writes) {
        if (!c->atomic) gc_fail(me, "reads", addr, n, c->tid, "wrote");
      } else if (kind == kGAtomic) {
        if (!c->atomic) gc_fail(me, "updates atomically", addr, n, c->tid, "wrote plainly");
      } else {
        gc_fail(me, "writes", addr, n, c->tid, c->atomic ? "updated atomically" : "wrote");
      }
    }
    if (writes) *c = GCell{me, gb.clock, E.bar_epoch, (uint8_t)(kind == kGAtomic || kind == kGVolatileWrite), my_seq};
  }
  if (kind == kGAtomic) gb.atomic_seq[a] = my_seq;
  if (sync_store) join_into(G.syncs[a], gb.rel);
}

inline bool gc_is_private(const void* addr) {
  const char* p = static_cast<const char*>(addr);
  const char* tls = reinterpret_cast<const char*>(g_plan.tls);
  const char* dyn = reinterpret_cast<const char*>(g_plan.dyn);
  const Fiber* f = E.cur->fiber;
  if (f && p >= f->stack_lo - page_size() && p < f->stack_lo + stack_size()) return true;
  if (tls && p >= tls && p < tls + g_plan.tls_size) return true;
  return p >= dyn && p < dyn + g_plan.dyn_size;
}

// ---- blocks that interleave (FGEMU_BLOCKS > 1) --------------------------------------------------------------
// Several blocks are resident at once; a thread may hand the host thread to another resident block at a
// synchronisation point (barrier exit, atomic, __threadfence, volatile load of instrumented code, __nanosleep), drawn
// from the schedule seed. A grid larger than the resident set keeps the hardware's rule: a block starts when a
// resident one finishes. Switching blocks swaps the block's engine state and its shared memory.

inline uint64_t sched_next() {
  uint64_t& x = g_sched_rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

void block_init() {
  E.rhead = E.rcount = 0;
  E.next_unstarted = 0;
  E.fibers_used = 0;
  E.free_fibers.clear();
  E.n_exited = E.n_at_bar = 0;
  E.bar_mismatch = false;
  E.bar_epoch = 0;
  for (Thread& t : E.threads) {
    t.state = kUnstarted;
    t.fiber = nullptr;
    t.grid_dep_synced = false;
  }
  for (int w = 0; w < E.nwarps; ++w) {
    WarpState& ws = E.warps[w];
    ws.exited = ws.at_bar = ws.at_op = ws.at_active = 0;
  }
  if (g_schedule == kScheduleRandom) {  // a fresh permutation per block, reproducible from the seed
    const uint3 b = g_builtin.block_idx;
    uint64_t x = (uint64_t)g_schedule_seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)b.x << 1) ^ ((uint64_t)b.y << 22) ^
                 ((uint64_t)b.z << 43);
    for (int i = E.nthreads - 1; i > 0; --i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      std::swap(E.order[(size_t)i], E.order[(size_t)(x % (uint64_t)(i + 1))]);
    }
  }
  rc_setup_block();
}

enum BlockRun { kBlockDone, kBlockYielded, kBlockFailed };

// Runs the installed block until it finishes, fails, or (several resident blocks) a thread yields to another block.
BlockRun block_drive() {
  if (!E.started) {
    E.started = true;
    switch_to(start_on_new_fiber());
  } else if (E.next_unstarted < E.nthreads) {
    switch_to(start_on_new_fiber());  // a resident block's threads all run: start the next one
  } else if (E.rcount) {
    switch_to(pop_ready());
  }
  for (;;) {
    // Back on the launching stack: the block finished, failed, yielded, or nobody can run.
    if (E.failed) return kBlockFailed;
    if (g_yielded) {
      g_yielded = false;
      return kBlockYielded;
    }
    if (E.n_exited == E.nthreads) {
      if (R.on) {
        rc_learn();
        R.full_scan = g_racecheck_full;
      }
      return kBlockDone;
    }
    if (E.rcount) {  // cannot happen (fibers only come back when nothing is ready), but stay safe
      switch_to(pop_ready());
      continue;
    }
    if (E.n_at_bar + E.n_exited == E.nthreads && E.n_exited == 0 && !E.bar_mismatch) {
      release_barrier();
      switch_to(pop_ready());
      continue;
    }
    E.failed = true;
    E.error = diagnose_stuck();
    return kBlockFailed;
  }
}

// Shared memory of the installed block <-> its parking place (ParkedSmem). Parking keeps only what differs from the
// fill (poison_shared()'s byte): the runs of kParkRun bytes that hold anything else, each then reset to the fill, so
// that shared memory is as poison_shared() leaves it afterwards. A switch costs one read of the launch's shared memory
// plus the block's own working set, not two copies of it. smem_park(nullptr) only resets.
constexpr size_t kParkRun = 256;

bool run_is_fill(const unsigned char* q, size_t n) {
  uint64_t pat;
  memset(&pat, g_poison_byte, sizeof pat);
  if (n == kParkRun) {
    uint64_t acc = 0;
    for (size_t i = 0; i < kParkRun; i += sizeof(uint64_t)) {  // vectorised: no early exit
      uint64_t w;
      memcpy(&w, q + i, sizeof w);
      acc |= w ^ pat;
    }
    return acc == 0;
  }
  for (size_t i = 0; i < n; ++i)
    if (q[i] != g_poison_byte) return false;
  return true;
}

void smem_park(ParkedSmem* out) {
  if (out) {
    out->spans.clear();
    out->bytes.clear();
  }
  auto park = [&](unsigned char* lo, unsigned char* hi) {
    for (unsigned char* q = lo; q < hi; q += kParkRun) {
      const size_t n = std::min(kParkRun, (size_t)(hi - q));
      if (run_is_fill(q, n)) continue;
      if (out) {
        if (!out->spans.empty() && out->spans.back().first + out->spans.back().second == q)
          out->spans.back().second += n;  // the run continues the previous span
        else
          out->spans.emplace_back(q, n);
        out->bytes.insert(out->bytes.end(), q, q + n);
      }
      memset(q, g_poison_byte, n);
    }
  };
  for_each_block_range(park);
}

// Shared memory as poison_shared() leaves it -> the parked block's.
void smem_unpark(const ParkedSmem& in) {
  const unsigned char* src = in.bytes.data();
  for (const auto& [q, n] : in.spans) {
    memcpy(q, src, n);
    src += n;
  }
}

void run_grid(const LaunchDesc& d) {
  const uint64_t nblocks = (uint64_t)d.grid.x * d.grid.y * d.grid.z;
  g_interleave = g_resident > 1 && nblocks > 1;
  if (!g_interleave) {  // one block at a time, in index order (x fastest)
    for (uint64_t b = 0; b < nblocks && !E.failed; ++b) {
      g_builtin.block_idx = block_at(b, d.grid);
      E.block_idx = g_builtin.block_idx;
      E.started = false;
      poison_shared();
      block_init();
      block_drive();
    }
    return;
  }
  const int nslots = (int)std::min<uint64_t>((uint64_t)g_resident, nblocks);
  g_slots.assign((size_t)nslots, static_cast<const BlockState&>(E));  // thread tables as set up by launch()
  g_slot_rc.assign((size_t)nslots, R);  // each resident block has its own shared-memory race state
  uint64_t next = 0;
  std::vector<int> live;
  for (int s = 0; s < nslots; ++s) {
    g_slots[(size_t)s].fiber_base = (size_t)s * E.threads.size();
    g_slots[(size_t)s].block_idx = block_at(next++, d.grid);
    g_slots[(size_t)s].started = false;
    live.push_back(s);
  }
  g_spins = 0;
  bool first = true;
  while (!live.empty() && !E.failed) {
    const size_t k = (size_t)(sched_next() % live.size());
    const int s = live[k];
    std::swap(static_cast<BlockState&>(E), g_slots[(size_t)s]);
    std::swap(R, g_slot_rc[(size_t)s]);
    g_builtin.block_idx = E.block_idx;
    // Shared memory is the fill here (the first pass fills it; every pass below leaves it so).
    if (first) poison_shared();
    first = false;
    if (E.started)
      smem_unpark(E.smem);
    else
      block_init();
    BlockRun r = block_drive();
    if (r == kBlockFailed) break;
    smem_park(r == kBlockDone ? nullptr : &E.smem);
    if (r == kBlockDone) {
      g_spins = 0;
      if (next < nblocks) {
        E.block_idx = block_at(next++, d.grid);
        E.started = false;
      } else {
        live.erase(live.begin() + (std::ptrdiff_t)k);
      }
    }
    std::swap(static_cast<BlockState&>(E), g_slots[(size_t)s]);
    std::swap(R, g_slot_rc[(size_t)s]);
  }
}

}  // namespace

// A thread at a synchronisation point may let another resident block run (FGEMU_BLOCKS > 1): with probability 1/4 at
// atomics, fences, volatile accesses and __nanosleep (where blocks communicate), 1/32 after barriers (a switch parks
// the block's shared memory: smem_park reads all of the launch's).
void sync_point(unsigned one_in) {
  if (!g_interleave || !E.active || !E.cur || E.failed) return;
  if (sched_next() % one_in != 0) return;
  Thread* t = E.cur;
  rc_end(t);
  if (E.failed) abandon_fiber();
  if (++g_spins > g_spin_limit) {
    std::string where = launch_prefix() + ": no progress after " + std::to_string(g_spin_limit) +
                        " switches between the " + std::to_string(g_slots.size()) +
                        " resident blocks (no block finished, no barrier released): the threads wait for each other " +
                        "or for a block that is not resident (FGEMU_BLOCKS=" + std::to_string(g_resident) +
                        " blocks are modelled as resident; a grid-wide wait needs every block resident at once). " +
                        "Last: " + where_thread(t);
    record_failure(where);
    abandon_fiber();
  }
  push_ready(t);
  g_yielded = true;
  switch_to_main();
}

// Called by the instrumented loads and stores of kernel code (memcheck.cpp).
// A programmatic launch's thread touching global memory before cudaGridDependencySynchronize(): on a GPU the
// previous kernel in the stream may still be running then (its writes not yet made, its reads not yet done).
[[noreturn]] void grid_dep_fail(const void* addr, size_t size, const char* verb) {
  char a[32];
  snprintf(a, sizeof a, "%p", addr);
  record_failure(launch_prefix() + ": " + where_thread(E.cur) + " " + verb + " " + std::to_string(size) +
                 " bytes of global memory at " + a + " before cudaGridDependencySynchronize(), in a launch with "
                 "programmatic dependent launch: on a GPU the previous kernel in the stream may still be running");
  abandon_fiber();
}

// The emulator's own memory that instrumented kernel code reads: the launch's arguments (copied into each thread as
// kernel parameters), the built-in variables, the switches the inline atomics and fences test. Not global memory.
inline bool emu_state(const void* addr) {
  const char* p = static_cast<const char*>(addr);
  const char* b = reinterpret_cast<const char*>(&g_builtin);
  const char* args = static_cast<const char*>(E.d->payload);
  return (p >= args && p < args + E.d->payload_size) || (p >= b && p < b + sizeof g_builtin) ||
         addr == &::fgemu::g_racecheck || addr == &::fgemu::g_sync_hooks || addr == &::fgemu::g_programmatic;
}

// An access a GPU makes as one instruction, at an address that is not a multiple of its size.
[[noreturn]] void misaligned_fail(const void* addr, size_t size, const char* what) {
  char a[32];
  snprintf(a, sizeof a, "%p", addr);
  record_failure(launch_prefix() + ": " + where_thread(E.cur) + " " + what + " of " + std::to_string(size) +
                 " bytes at " + a + ", which is not a multiple of " + std::to_string(size) +
                 ": misaligned address (on a GPU cudaErrorMisalignedAddress, which ends the CUDA context)");
  abandon_fiber();
}

void check_aligned(const void* addr, size_t bytes, const char* what) {
  if (!E.active || !E.cur || E.failed) return;
  if (reinterpret_cast<uintptr_t>(addr) % bytes != 0) misaligned_fail(addr, bytes, what);
}

namespace {

// What mem_access does beyond its common case (below): the alignment failure, the progress point of a volatile access
// while blocks interleave, the programmatic-launch check and the global-memory race check.
[[gnu::noinline]] void mem_access_checked(const void* addr, size_t size, int kind) {
  if (kind & kNatural) {
    kind &= ~kNatural;
    // (not the emulator's own variables: kernel parameters live in its payload, packed as the host compiler laid
    // them out)
    if ((reinterpret_cast<uintptr_t>(addr) & (size - 1)) != 0 && !emu_state(addr))
      misaligned_fail(addr, size, (kind == kGRead || kind == kGVolatileRead) ? "a load" : "a store");
  }
  if ((kind == kGVolatileRead || kind == kGVolatileWrite) && g_interleave) sync_point();  // spin loops progress
  if (__builtin_expect(E.d->programmatic && !E.cur->grid_dep_synced, 0) && !gc_is_private(addr) && !emu_state(addr))
    grid_dep_fail(addr, size, (kind == kGRead || kind == kGVolatileRead) ? "reads" : "writes");
  if (!G.on || gc_is_private(addr)) return;
  gc_access(addr, size, kind);
}

}  // namespace

// Every load and store of the instrumented kernel code. The common case (an aligned access that no check needs: no
// race check, not volatile while blocks interleave, past the grid-dependency sync of a programmatic launch, as
// fastgan's kernels always are under emulation) returns at once, from a function that saves no register.
void mem_access(const void* addr, size_t size, int kind) {
  if (!E.active || !E.cur || E.failed) return;
  // (the flag the hooks read is process-wide: instrumented host code on another thread may get here during a launch)
  if (g_launch_thread.load(std::memory_order_relaxed) != (unsigned long)pthread_self()) return;
  const bool misaligned = (kind & kNatural) && (reinterpret_cast<uintptr_t>(addr) & (size - 1)) != 0;
  const bool before_grid_sync = E.d->programmatic && !E.cur->grid_dep_synced;
  const bool progress = g_interleave && ((kind & ~kNatural) == kGVolatileRead || (kind & ~kNatural) == kGVolatileWrite);
  if (__builtin_expect(!misaligned && !G.on && !progress && !before_grid_sync, 1)) return;
  mem_access_checked(addr, size, kind);
}

void atomic_before_grid_sync(const void* addr, size_t size) {
  if (!E.active || !E.cur || E.failed || E.cur->grid_dep_synced || gc_is_private(addr)) return;
  grid_dep_fail(addr, size, "updates (atomically)");
}

void grid_dependency_sync() {
  if (!E.active || !E.cur || E.failed) return;
  E.cur->grid_dep_synced = true;
  refresh_access_checks();
}

void device_fence() {
  if (!E.active || !E.cur || E.failed) return;
  if (G.on) {
    GBlock& gb = G.blocks[gc_block_linear()];
    gb.rel = gb.vc;
    gb.rel[gc_block_linear()] = gb.clock++;
  }
  sync_point();
}

namespace {

struct LaunchScope {
  LaunchScope() { g_launch_thread.store((unsigned long)pthread_self()); }
  ~LaunchScope() {
    // Restore the host thread's TLS and leave the engine reusable whatever happened.
    if (g_plan.tls && !g_plan.saved.empty()) copy_static_ranges(g_plan.tls, g_plan.saved.data());
    g_plan.tls = nullptr;
    g_interleave = false;
    g_access_checks = 0;
    remove_fault_handlers();
    E.active = false;
    E.cur = nullptr;
    E.cur_fiber = nullptr;
    E.d = nullptr;
    ::fgemu::g_programmatic = false;
    g_builtin = BuiltinVars{};
    g_launch_thread.store(0);
  }
};

}  // namespace

// =================================================================================================================
// Public entry points.
// =================================================================================================================
namespace {
bool g_log_launches = false;
std::vector<std::string> g_launch_log;  // kernel names, for `fastgan doctor --kernels`
}  // namespace

void set_launch_log(bool on) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  g_log_launches = on;
  g_launch_log.clear();
}

std::vector<std::string> take_launch_log() {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  std::vector<std::string> out;
  out.swap(g_launch_log);
  return out;
}

void launch(const LaunchDesc& d) {
  std::string bad = config_error(d);
  if (!bad.empty()) throw std::runtime_error(bad);

  if (g_launch_thread.load() == (unsigned long)pthread_self())
    throw std::runtime_error(std::string("fgemu: kernel '") + (d.name ? d.name : "?") +
                             "' launched from inside a running kernel (dynamic parallelism is not emulated)");
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  read_env_once();
  if (g_log_launches) g_launch_log.emplace_back(d.name ? d.name : "?");

  // Locate the shared memory of this launch before the scope starts (TLS of this module is still "live" here).
  TlsModule mod;
  {
    auto it = g_tls_modules.find(d.kernel_id);
    if (it == g_tls_modules.end()) it = g_tls_modules.emplace(d.kernel_id, find_tls_module(d.kernel_id)).first;
    mod = it->second;
  }
  unsigned char* dyn = static_cast<unsigned char*>(dynamic_smem());
  g_plan.dyn = dyn;
  g_plan.dyn_size = kDynamicSmemOptinLimit;
  g_plan.dyn_poison = std::min(kDynamicSmemOptinLimit, (d.smem + 255) & ~(size_t)255);
  if (mod.has) {
    g_plan.tls = static_cast<unsigned char*>(tls_block(mod.modid));
    g_plan.tls_size = mod.size;
    g_plan.dyn_inside = dyn >= g_plan.tls && dyn + g_plan.dyn_size <= g_plan.tls + g_plan.tls_size;
    plan_ranges(smem_skip(mod, d.kernel_id));
    g_launch_smem = &g_module_smem[mod.modid];
    g_plan.saved.resize(mod.size);
    copy_static_ranges(g_plan.saved.data(), g_plan.tls);
  } else {
    g_plan.tls = nullptr;
    g_plan.tls_size = 0;
    g_plan.dyn_inside = false;
    plan_ranges({});
    g_launch_smem = nullptr;
  }

  LaunchScope scope;
  install_fault_handlers();
#ifdef FGEMU_ASAN
  {
    static std::unordered_map<unsigned long, std::pair<void*, size_t>> stacks;  // pthread_getattr_np is slow
    auto it = stacks.find((unsigned long)pthread_self());
    if (it == stacks.end()) {
      pthread_attr_t attr;
      void* lo = nullptr;
      size_t size = 0;
      if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstack(&attr, &lo, &size);
        pthread_attr_destroy(&attr);
      }
      it = stacks.emplace((unsigned long)pthread_self(), std::make_pair(lo, size)).first;
    }
    E.main_stack_lo = it->second.first;
    E.main_stack_size = it->second.second;
  }
#endif

  const int nthreads = (int)(d.block.x * d.block.y * d.block.z);
  E.d = &d;
  ::fgemu::g_programmatic = d.programmatic;
  E.active = true;
  E.failed = false;
  E.error.clear();
  E.nthreads = nthreads;
  E.nwarps = (nthreads + 31) / 32;
  E.threads.resize((size_t)E.nwarps * 32);  // padded to whole warps so warp-relative indexing is always valid
  E.warps.resize((size_t)E.nwarps);
  E.ready.resize((size_t)nthreads);
  E.cur = nullptr;
  E.cur_fiber = nullptr;
  for (int i = 0; i < E.nwarps * 32; ++i) {
    Thread& t = E.threads[(size_t)i];
    t = Thread{};
    t.linear = i;
    t.warp = i / 32;
    t.lane = i % 32;
    t.tid = uint3{(unsigned)(i % (int)d.block.x), (unsigned)((i / (int)d.block.x) % (int)d.block.y),
                  (unsigned)(i / ((int)d.block.x * (int)d.block.y))};
  }
  for (int w = 0; w < E.nwarps; ++w) {
    int n = std::min(32, nthreads - 32 * w);
    E.warps[(size_t)w] = WarpState{n == 32 ? 0xFFFFFFFFu : ((1u << n) - 1u), 0, 0, 0, 0};
  }
  g_builtin.block_dim = d.block;
  g_builtin.grid_dim = d.grid;
  E.order.resize((size_t)nthreads);
  for (int i = 0; i < nthreads; ++i) E.order[(size_t)i] = g_schedule == kScheduleReverse ? nthreads - 1 - i : i;
  R.on = ::fgemu::g_racecheck;
  // Resident blocks: FGEMU_BLOCKS, else 4 under the random schedule (but 1 under the race check unless FGEMU_BLOCKS
  // says otherwise), else 1: one block at a time, in index order.
  g_resident = g_blocks_env ? g_blocks_env : (R.on || g_schedule != kScheduleRandom ? 1 : 4);
  static uint64_t launch_count = 0;
  ++launch_count;
  g_sched_rng = ((uint64_t)g_schedule_seed + 1) * 0x9E3779B97F4A7C15ull ^ (launch_count * 0xD1B54A32D192ED03ull);
  if (!g_sched_rng) g_sched_rng = 1;
  g_poison_byte = g_poison_mode >= 0 ? (unsigned char)g_poison_mode
                                     : (unsigned char)((g_poison_seed + 1) * 2654435761u ^ launch_count * 40503u) ;
  ::fgemu::g_sync_hooks = R.on || g_resident > 1;
  async_clear();
  gc_begin_launch();
  R.ranges.clear();
  R.total = 0;
  if (R.on) {
    auto add = [](unsigned char* lo, unsigned char* hi, bool is_dyn) {
      if (hi <= lo) return;
      R.ranges.push_back(RaceRange{lo, (size_t)(hi - lo), R.total, is_dyn, is_dyn ? 0 : (size_t)(lo - g_plan.tls)});
      R.total += ((size_t)(hi - lo) + kPage - 1) / kPage * kPage;  // a page never straddles two ranges
    };
    for (const auto& [lo, hi] : g_plan.ranges) add(lo, hi, false);
    add(g_plan.dyn, g_plan.dyn + d.smem, true);
    // The learned pages index these ranges (the dynamic one last); they start again if the static ones changed.
    LearnedPages& lp = g_rc_learned[d.kernel_id];
    std::vector<size_t> layout;
    for (const RaceRange& r : R.ranges)
      if (!r.dynamic) layout.insert(layout.end(), {r.block_off, r.len});
    if (layout != lp.layout) {
      lp.layout = std::move(layout);
      lp.pages.clear();
    }
    std::vector<uint8_t>& learned = lp.pages;
    // first launch of this kernel under the check: compare everything in block 0
    R.full_scan = learned.empty() || g_racecheck_full;
    learned.resize(R.total / kPage, 0);
    R.learned = &learned;
    R.scan_pages.clear();
    for (const RaceRange& r : R.ranges)
      for (size_t pg = r.off / kPage; pg < (r.off + r.len + kPage - 1) / kPage; ++pg)
        if (r.dynamic || learned[pg]) {
          learned[pg] = 1;
          R.scan_pages.push_back((uint32_t)pg);
        }
  }

  run_grid(d);

  if (E.failed) {
    std::string msg = E.error;
    E.error.clear();
    E.failed = false;
    throw std::runtime_error(msg);
  }
}

void syncthreads(const char* file, int line) {
  (void)barrier(kBarPlain, 0, file, line);
  if (g_interleave) sync_point(32);
}

void note_atomic(const void* addr, size_t size) {
  if (!R.on || !E.active || !E.cur || E.failed) return;
  bool found = false;
  uint32_t i0 = rc_index(addr, &found);
  if (!found) {  // global memory
    if (G.on && !gc_is_private(addr)) gc_access(addr, size, kGAtomic);
    return;
  }
  const uint32_t me = (uint32_t)E.cur->linear + 1;
  for (uint32_t i = i0; i < i0 + size && i < R.total; ++i) {
    uint32_t& o = R.owner[i];
    if (o == 0) {
      o = me | kAtomicBit;
      R.dirty.push_back(i);
    } else if (o & kAtomicBit) {
      if ((o & kOwnerMask) != me) o |= kMultiAtomicBit;
    } else if ((o & kOwnerMask) == me) {
      o |= kAtomicBit;
    } else {
      rc_fail(rc_where(i) + " is written by " + rc_thread(o & kOwnerMask) + " and updated atomically by " +
              rc_thread(me));
      abandon_fiber();
    }
    R.committed[i] = *rc_addr(i);
    R.shadow[i] = R.committed[i];
  }
}

int syncthreads_reduce(int kind, int pred, const char* file, int line) {
  int r = barrier(kind, pred, file, line);
  if (g_interleave) sync_point(32);
  return r;
}

WarpResult warp_op(int kind, unsigned mask, uint64_t value, int value_size, int param, int width, const char* file,
                   int line) {
  Thread* t = current_or_throw(warp_name(kind));
  if (!((mask >> t->lane) & 1u)) {
    record_failure(launch_prefix() + ": " + where_thread(t) + " calls " + warp_name(kind) + " (" +
                   fmt_site(file, line) + ") with mask " + fmt_mask(mask) + " that does not include its own lane");
    abandon_fiber();
  }
  if (is_shfl(kind) && (width < 1 || width > 32 || (width & (width - 1)))) {
    record_failure(launch_prefix() + ": " + where_thread(t) + " calls " + warp_name(kind) + " (" +
                   fmt_site(file, line) + ") with width " + std::to_string(width) +
                   " (must be a power of two in [1, 32])");
    abandon_fiber();
  }
  rc_end(t);
  if (E.failed) abandon_fiber();
  t->state = kAtWarp;
  t->w_kind = kind;
  t->w_mask = mask;
  t->w_value = value & size_mask(value_size);
  t->w_size = value_size;
  t->w_param = param;
  t->w_width = width;
  t->w_file = file;
  t->w_line = line;
  WarpState& ws = E.warps[t->warp];
  ws.at_op |= 1u << t->lane;
  try_group(t->warp, mask);
  if (!E.failed && ws.at_active) try_active(t->warp);
  if (E.failed) abandon_fiber();
  if (t->state != kRunning)
    block_current();
  else
    rc_begin(t);
  return t->w_result;
}

unsigned activemask(const char* file, int line) {
  Thread* t = current_or_throw("__activemask");
  rc_end(t);
  if (E.failed) abandon_fiber();
  t->state = kAtActive;
  t->w_kind = -1;
  t->w_file = file;
  t->w_line = line;
  WarpState& ws = E.warps[t->warp];
  ws.at_active |= 1u << t->lane;
  try_active(t->warp);
  if (t->state != kRunning)
    block_current();
  else
    rc_begin(t);
  return (unsigned)t->w_result.value;
}

void async_copy(void* dst, const void* src, int bytes, int src_bytes) {
  Thread* t = current_or_throw("cp.async");
  if ((bytes != 4 && bytes != 8 && bytes != 16) || src_bytes < 0 || src_bytes > bytes ||
      (reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src)) % (uintptr_t)bytes != 0) {
    record_failure(launch_prefix() + ": " + where_thread(t) + " cp.async of " + std::to_string(bytes) + " bytes (" +
                   std::to_string(src_bytes) + " from the source): sizes 4, 8, 16 with addresses aligned to the size");
    abandon_fiber();
  }
  if (E.d->programmatic && !t->grid_dep_synced && src_bytes > 0)
    grid_dep_fail(src, (size_t)src_bytes, "copies (cp.async)");
  AsyncQueue& q = g_async[t];
  AsyncCopy c;
  c.dst = static_cast<unsigned char*>(dst);
  c.bytes = bytes;
  c.group = q.committed;
  memset(c.data, 0, sizeof(c.data));  // beyond src_bytes: zero fill, as the instruction's src-size operand says
  if (src_bytes > 0) memcpy(c.data, src, (size_t)src_bytes);
  memset(dst, g_poison_byte, (size_t)bytes);
  q.pending.push_back(c);
}

void async_commit() { ++g_async[current_or_throw("cp.async.commit_group")].committed; }

void async_wait(int newer_groups) {
  Thread* t = current_or_throw("cp.async.wait_group");
  auto it = g_async.find(t);
  if (it == g_async.end()) return;
  AsyncQueue& q = it->second;
  const unsigned n = newer_groups < 0 ? 0u : (unsigned)newer_groups;
  async_land(q, q.committed > n ? q.committed - n : 0u);
}

void yield_thread() {
  Thread* t = current_or_throw("__nanosleep");
  if (!E.rcount && E.next_unstarted >= E.nthreads) return;  // nobody else can run
  rc_end(t);
  if (E.failed) abandon_fiber();
  if (!E.rcount) {  // only unstarted threads: start one, come back when it blocks or ends
    push_ready(t);
    Thread* n = start_on_new_fiber();
    switch_to(n);
    return;
  }
  push_ready(t);
  Thread* n = pop_ready();
  if (n == t) {
    t->state = kRunning;
    rc_begin(t);
    return;
  }
  switch_to(n);
}

[[noreturn]] void device_trap(const char* what, const char* file, int line) {
  Thread* t = current_or_throw(what);
  record_failure(launch_prefix() + ": " + where_thread(t) + " executed " + what + " at " + fmt_site(file, line));
  abandon_fiber();
}

void set_schedule(int mode, unsigned seed) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  read_env_once();
  g_schedule = mode;
  g_schedule_seed = seed;
}

void set_racecheck(bool on, bool full) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  read_env_once();
  ::fgemu::g_racecheck = on;
  g_racecheck_full = on && full;
}

int get_schedule(unsigned* seed) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  read_env_once();
  if (seed) *seed = g_schedule_seed;
  return g_schedule;
}

void set_blocks(int resident) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  read_env_once();
  g_blocks_env = std::max(0, resident);
}

void last_static_smem(size_t* covered, size_t* module_block) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  *covered = 0;  // the last launch's plan (LaunchScope leaves its ranges and size)
  for (const auto& [lo, hi] : g_plan.ranges) *covered += (size_t)(hi - lo);
  *module_block = g_plan.tls_size;
}

int get_blocks() {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  read_env_once();
  return g_blocks_env;
}

void set_poison(int byte, unsigned seed) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  read_env_once();
  g_poison_mode = byte < 0 ? -1 : (byte & 0xFF);
  g_poison_seed = seed;
}

int get_poison() {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  read_env_once();
  return g_poison_mode;
}

void set_spin_limit(unsigned long n) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  read_env_once();
  g_spin_limit = std::max(1UL, n);
}

bool get_racecheck() {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  read_env_once();
  return ::fgemu::g_racecheck;
}

long long clock_ticks() {
  return (long long)std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace rt
}  // namespace fgemu

// =================================================================================================================
// CUDA runtime API subset.
// =================================================================================================================
namespace {
thread_local cudaError_t g_last_error = cudaSuccess;  // only touched outside launches (see the TLS note on top)
}

const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidSymbol: return "cudaErrorInvalidSymbol";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorAssert: return "cudaErrorAssert";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidSymbol: return "invalid device symbol";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorAssert: return "device-side assert triggered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
  }
}

cudaError_t cudaGetLastError() {
  cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() { return g_last_error; }

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  using namespace fgemu::rt;
  if (!func) return g_last_error = cudaErrorInvalidDeviceFunction;
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || (size_t)value > kDynamicSmemOptinLimit) return g_last_error = cudaErrorInvalidValue;
    std::lock_guard<std::mutex> g(g_attr_mutex);
    g_max_dynamic_smem[func] = value;
    return cudaSuccess;
  }
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) {
    if (value < -1 || value > 100) return g_last_error = cudaErrorInvalidValue;
    return cudaSuccess;
  }
  return cudaSuccess;  // cluster attributes: accepted, no effect
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (!p) return g_last_error = cudaErrorInvalidValue;
  size_t n = (bytes + 255) & ~(size_t)255;
  *p = n ? aligned_alloc(256, n) : nullptr;
  if (n && !*p) return g_last_error = cudaErrorMemoryAllocation;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  free(p);
  return cudaSuccess;
}

// =================================================================================================================
// assert() inside kernels: glibc's assert calls __assert_fail. This hidden definition takes precedence for every call
// inside the module that contains the runtime (the test binaries, the fastgan extension): inside a kernel the failure
// aborts the launch with an error naming the kernel (like cudaErrorAssert); elsewhere it behaves like glibc's.
// =================================================================================================================
extern "C" __attribute__((visibility("hidden"), noreturn)) void __assert_fail(const char* assertion, const char* file,
                                                                              unsigned int line,
                                                                              const char* function) noexcept {
  using namespace fgemu::rt;
  if (E.active && E.cur) {
    record_failure(launch_prefix() + ": " + where_thread(E.cur) + ": device-side assertion `" + assertion +
                   "' failed at " + fmt_site(file, (int)line) + " in " + (function ? function : "?"));
    abandon_fiber();
  }
  fprintf(stderr, "%s:%u: %s: Assertion `%s' failed.\n", file, line, function ? function : "?", assertion);
  abort();
}
