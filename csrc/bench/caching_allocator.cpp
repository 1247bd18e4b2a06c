// fastgan.bench._allocator: a caching CPU allocator for `fastgan bench --cpu-allocator caching`. Its own small
// extension module, loaded only by that option (never by `import fastgan`).
//
// With glibc's malloc, where a fresh gradient buffer lands (a reused cache-warm block, cold memory, or pages the
// heap trimmed and faults back in) depends on everything allocated before it, and moves a small op's time by
// 10-100% between processes -- for stock PyTorch and fastgan alike (benchmarks/NOTES.md, fifth session). This
// allocator takes that out of a measurement: freed blocks are kept per exact size and handed out again last-in
// first-out, so an op that allocates the same buffers every call gets the same (warm) memory every call, as
// jemalloc / tcmalloc's caches would give it. Installed process-wide through c10::SetCPUAllocator, for the rest
// of the process (the bench runs in its own); memory is never returned to the system. Not for training.
#include <pybind11/pybind11.h>

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <mutex>
#include <unordered_map>
#include <vector>

namespace fastgan {
namespace {

struct CachingCpuAllocator final : c10::Allocator {
  std::mutex mutex;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;  // exact size -> freed blocks (LIFO)
  std::unordered_map<void*, size_t> sizes;                     // every block ever allocated -> its size

  static CachingCpuAllocator& instance() {
    static CachingCpuAllocator* a = new CachingCpuAllocator();  // never destroyed: tensors may outlive statics
    return *a;
  }
  static void release(void* p) {
    CachingCpuAllocator& a = instance();
    std::lock_guard<std::mutex> lock(a.mutex);
    a.free_blocks[a.sizes.at(p)].push_back(p);
  }
  c10::DataPtr allocate(size_t n) override {
    std::lock_guard<std::mutex> lock(mutex);
    void* p = nullptr;
    auto it = free_blocks.find(n);
    if (it != free_blocks.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
    } else {
      p = c10::alloc_cpu(n > 0 ? n : 1);  // torch's own aligned allocation (and its limits / errors)
      sizes.emplace(p, n);
    }
    return {p, p, &CachingCpuAllocator::release, c10::Device(c10::DeviceType::CPU)};  // context == data
  }
  c10::DeleterFnPtr raw_deleter() const override { return &CachingCpuAllocator::release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

bool g_installed = false;

}  // namespace

void use_caching_cpu_allocator() {
  if (g_installed) return;
  // priority above the default allocator's (0): from now on every CPU tensor comes from here
  c10::SetCPUAllocator(&CachingCpuAllocator::instance(), /*priority=*/10);
  g_installed = true;
}

bool caching_cpu_allocator_active() { return g_installed && c10::GetCPUAllocator() == &CachingCpuAllocator::instance(); }

}  // namespace fastgan

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("use_caching_cpu_allocator", &fastgan::use_caching_cpu_allocator,
        "every CPU tensor from a per-size LIFO cache from now on (process-wide)");
  m.def("caching_cpu_allocator_active", &fastgan::caching_cpu_allocator_active);
}
