// SPDX-License-Identifier: MIT
// The CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota.
#include <sched.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "xcs/executor.hpp"

namespace xcs {
namespace {

unsigned affinity_cpus() noexcept {
  // Sized for any number of CPUs the kernel may have, not only CPU_SETSIZE.
  for (int n = 1024; n <= (1 << 16); n *= 2) {
    cpu_set_t* set = CPU_ALLOC(n);
    if (!set) break;
    std::size_t size = CPU_ALLOC_SIZE(n);
    CPU_ZERO_S(size, set);
    int rc = sched_getaffinity(0, size, set);
    int count = rc == 0 ? CPU_COUNT_S(size, set) : 0;
    CPU_FREE(set);
    if (rc == 0) return static_cast<unsigned>(count);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

/// CPUs a quota of `quota` per `period` allows, rounded up; nullopt for none or bad figures.
std::optional<unsigned> quota_cpus(std::int64_t quota, std::int64_t period) {
  if (quota <= 0 || period <= 0) return std::nullopt;
  return static_cast<unsigned>((quota + period - 1) / period);
}

/// cgroup v2: "max 100000" (no quota) or "50000 100000".
std::optional<unsigned> read_cpu_max(const std::string& dir) {
  std::ifstream in(dir + "/cpu.max");
  std::string quota;
  std::int64_t period = 0;
  if (!(in >> quota >> period) || quota == "max") return std::nullopt;
  try {
    return quota_cpus(std::stoll(quota), period);
  } catch (...) {
    return std::nullopt;
  }
}

/// cgroup v1: cpu.cfs_quota_us (-1: no quota) and cpu.cfs_period_us.
std::optional<unsigned> read_cfs_quota(const std::string& dir) {
  std::ifstream q(dir + "/cpu.cfs_quota_us");
  std::ifstream p(dir + "/cpu.cfs_period_us");
  std::int64_t quota = 0, period = 0;
  if (!(q >> quota) || !(p >> period)) return std::nullopt;
  return quota_cpus(quota, period);
}

/// The lowest quota from `path` (a cgroup path, "/..." ) up to the root of `mount`.
template <class Read>
std::optional<unsigned> lowest_quota(const std::string& mount, std::string path, Read read) {
  std::optional<unsigned> lowest;
  for (;;) {
    if (auto q = read(mount + path); q && (!lowest || *q < *lowest)) lowest = q;
    if (path.empty() || path == "/") break;
    std::size_t slash = path.find_last_of('/');
    path = slash == 0 || slash == std::string::npos ? std::string("/") : path.substr(0, slash);
  }
  return lowest;
}

/// The CPU quota of this process's cgroup, if it has one.
std::optional<unsigned> cgroup_cpus() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  std::optional<unsigned> result;
  while (std::getline(in, line)) {
    // "hierarchy-id:controllers:path"; v2 is "0::path".
    std::size_t a = line.find(':');
    std::size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string controllers = line.substr(a + 1, b - a - 1);
    std::string path = line.substr(b + 1);
    std::optional<unsigned> q;
    if (controllers.empty()) {
      q = lowest_quota("/sys/fs/cgroup", path, read_cpu_max);
    } else if (("," + controllers + ",").find(",cpu,") != std::string::npos) {
      q = lowest_quota("/sys/fs/cgroup/" + controllers, path, read_cfs_quota);
      if (!q) q = lowest_quota("/sys/fs/cgroup/cpu", path, read_cfs_quota);
    }
    if (q && (!result || *q < *result)) result = q;
  }
  return result;
}

}  // namespace

unsigned available_cpus() noexcept {
  unsigned cpus = affinity_cpus();
  try {
    if (auto quota = cgroup_cpus()) cpus = std::min(cpus, *quota);
  } catch (...) {
    // No memory to read the files: the affinity mask alone.
  }
  return std::max(1u, cpus);
}

}  // namespace xcs
