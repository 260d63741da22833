// SPDX-License-Identifier: MIT
// The event thread: ppoll over an eventfd and the connections' sockets, posted tasks, timers,
// and what a child after fork() does with the parent's loop.
#include "event_loop.hpp"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <ctime>
#include <system_error>
#include <thread>

#include "connection.hpp"

namespace xcs::detail::redis {
namespace {

/// Guards g_loop. Taken before the loop's own lock (and never the other way round).
std::mutex g_mutex;
/// The process's loop; never freed (the thread never ends), leaked in a child after fork().
event_loop* g_loop = nullptr;
/// Bumped in a child after fork(). Relaxed: the child has one thread when it changes.
std::atomic<std::uint64_t> g_epoch{0};

int make_wake_fd() {
  const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "xcs::redis: eventfd");
  return fd;
}

timespec to_timespec(std::chrono::nanoseconds d) noexcept {
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(d);
  return timespec{static_cast<time_t>(s.count()), static_cast<long>((d - s).count())};
}

}  // namespace

event_loop::event_loop() : wake_fd_(make_wake_fd()) {
  try {
    std::thread([this] { run(); }).detach();
  } catch (...) {
    ::close(wake_fd_);
    throw;
  }
}

event_loop& event_loop::get() {
  // Registered before the first loop exists, so that every loop is forgotten in a child.
  [[maybe_unused]] static const int fork_handlers = pthread_atfork(
      &event_loop::lock_for_fork, &event_loop::unlock_in_parent, &event_loop::forget_in_child);
  std::lock_guard lock(g_mutex);
  if (!g_loop) g_loop = new event_loop;
  return *g_loop;
}

void event_loop::lock_for_fork() noexcept {
  g_mutex.lock();
  if (g_loop) g_loop->mutex_.lock();
}

void event_loop::unlock_in_parent() noexcept {
  if (g_loop) g_loop->mutex_.unlock();
  g_mutex.unlock();
}

void event_loop::forget_in_child() noexcept {
  // The loop's thread is the parent's: leak the loop, its lock (held) and its connections, and
  // close their sockets here so that the child holds no connection of the parent's open.
  if (g_loop) g_loop->close_in_child();
  g_loop = nullptr;
  g_epoch.fetch_add(1, std::memory_order_relaxed);
  g_mutex.unlock();
}

void event_loop::close_in_child() noexcept {
  for (auto& [key, c] : connections_) c->close_in_child();
  ::close(wake_fd_);
}

std::uint64_t event_loop::epoch() noexcept { return g_epoch.load(std::memory_order_relaxed); }

std::shared_ptr<connection> event_loop::connection_to(const address& where) {
  std::string key = where.connection_key();
  std::lock_guard lock(mutex_);
  auto found = connections_.find(key);
  if (found != connections_.end()) return found->second;
  auto made = std::make_shared<connection>(where);
  connections_.emplace(std::move(key), made);
  return made;
}

void event_loop::post(task t) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    posted_.push_back(std::move(t));
    wake = !std::exchange(wake_pending_, true);
  }
  if (wake) {
    const std::uint64_t one = 1;
    // Cannot fail but for an overflow of the counter, which a pending wake-up makes moot.
    [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
  }
}

void event_loop::add_timer(std::chrono::steady_clock::time_point when, task t) {
  timers_.emplace(std::make_pair(when, ++timer_serial_), std::move(t));
}

void event_loop::run_due_timers() {
  const auto now = std::chrono::steady_clock::now();
  while (!timers_.empty() && timers_.begin()->first.first <= now) {
    auto due = timers_.extract(timers_.begin());
    due.mapped()();
  }
}

void event_loop::run() noexcept {
  ::prctl(PR_SET_NAME, "xcs-redis");
  // hiredis writes with write(): to a server that just died, that raises SIGPIPE, whose default
  // action ends the process. Blocked on this thread (where every write is made), the write
  // fails with EPIPE instead and the connection reports the error; the user's own handling of
  // SIGPIPE on other threads is untouched.
  sigset_t pipe_signal;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
  std::vector<task> ready;
  std::vector<connection*> polled;
  std::vector<std::uint64_t> generations;
  std::vector<pollfd> fds;
  for (;;) {
    polled.clear();
    {
      std::lock_guard lock(mutex_);
      ready.swap(posted_);
      wake_pending_ = false;
      for (auto& [key, c] : connections_) polled.push_back(c.get());
    }
    for (task& t : ready) t();
    ready.clear();
    run_due_timers();
    const auto now = std::chrono::steady_clock::now();
    for (connection* c : polled) c->on_time(now);

    fds.clear();
    generations.clear();
    fds.push_back(pollfd{wake_fd_, POLLIN, 0});
    auto next = timers_.empty() ? std::chrono::steady_clock::time_point::max()
                                : timers_.begin()->first.first;
    for (connection* c : polled) {
      next = std::min(next, c->next_deadline());
      generations.push_back(c->generation());
      fds.push_back(pollfd{c->fd(), c->events(), 0});  // fd -1: ignored by ppoll
    }
    timespec timeout{};
    timespec* wait = nullptr;
    if (next != std::chrono::steady_clock::time_point::max()) {
      timeout = to_timespec(std::max(std::chrono::nanoseconds(0),
                                     std::chrono::duration_cast<std::chrono::nanoseconds>(
                                         next - std::chrono::steady_clock::now())));
      wait = &timeout;
    }
    if (::ppoll(fds.data(), fds.size(), wait, nullptr) < 0) continue;  // EINTR
    if (fds[0].revents) {
      std::uint64_t count;
      [[maybe_unused]] const auto n = ::read(wake_fd_, &count, sizeof count);
    }
    for (std::size_t i = 0; i < polled.size(); ++i) {
      // A callback of an earlier connection may have closed and reopened this one.
      if (fds[i + 1].revents && polled[i]->generation() == generations[i] &&
          polled[i]->fd() == fds[i + 1].fd) {
        polled[i]->on_ready(fds[i + 1].revents);
      }
    }
  }
}

}  // namespace xcs::detail::redis
