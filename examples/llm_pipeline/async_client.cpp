// SPDX-License-Identifier: MIT
// The multi-interface client: a queue filled by any thread, and one event thread that adds
// what is queued to the multi handle, drives it with the sockets epoll finds ready and curl's
// timer, and completes each request that ends.
#include "async_client.hpp"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>
#include <stdexcept>

#include "transfer.hpp"

namespace llm {

// One request from start() to its callback. Made on the thread that calls start(); from then
// on touched only by the event thread, except its stop callback, which may run on any thread
// and only posts the id.
struct async_client::pending {
  // Posts this request's cancel to the event thread: the stop callback's whole work, so that
  // it never waits for the event thread (which may be destroying it).
  struct post_cancel_fn {
    async_client* client;
    std::uint64_t id;
    void operator()() const noexcept { client->post_cancel(id); }
  };

  // `transfer_args` are the transfer's constructor's: a chat request, or a raw_json one.
  template <class... TransferArgs>
  pending(async_client& client, reply_callback& callback, std::stop_token token,
          TransferArgs&&... transfer_args)
      : request(std::forward<TransferArgs>(transfer_args)...),
        done(std::move(callback)),
        id(client.next_id_.fetch_add(1, std::memory_order_relaxed)),
        stop(std::move(token)) {}

  // Deregisters the stop callback, then runs `done`. Called once per request, by whichever
  // path ends it, never with mutex_ held (see mutex_).
  void complete(reply_or_error result) {
    on_stop.reset();
    done(std::move(result));
  }

  transfer request;
  reply_callback done;
  std::uint64_t id;
  std::stop_token stop;
  std::optional<std::stop_callback<post_cancel_fn>> on_stop;  // set once the request is whole
};

namespace {

// The llm_error of a request that was queued or in flight when its client was destroyed.
std::exception_ptr destroyed(const std::string& url) {
  return std::make_exception_ptr(llm_error(
      failure::transport, 0, "llm request to " + url + " failed: the client was destroyed"));
}

std::exception_ptr cancelled(const std::string& url) {
  return std::make_exception_ptr(transfer::cancelled(url));
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A non-null marker that curl keeps for each socket the event thread has added to epoll.
char in_epoll;

}  // namespace

async_client::async_client(client_options options, long max_idle_connections)
    : options_(std::move(options)) {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  multi_ = curl_multi_init();
  epoll_event wake{};
  wake.events = EPOLLIN;
  wake.data.fd = wake_fd_;
  if (epoll_fd_ < 0 || wake_fd_ < 0 || multi_ == nullptr ||
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &wake) != 0) {
    std::string why = std::strerror(errno);
    if (multi_ != nullptr) curl_multi_cleanup(multi_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    throw std::runtime_error("async_client: cannot set up the event loop: " + why);
  }
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &async_client::on_socket);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &async_client::on_timer);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, max_idle_connections);
  try {
    thread_ = std::thread([this] { run(); });
  } catch (...) {
    curl_multi_cleanup(multi_);
    ::close(wake_fd_);
    ::close(epoll_fd_);
    throw;
  }
}

async_client::~async_client() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  const std::uint64_t one = 1;
  (void)::write(wake_fd_, &one, sizeof one);
  thread_.join();
  curl_multi_cleanup(multi_);
  ::close(wake_fd_);
  ::close(epoll_fd_);
}

void async_client::start(std::string url, const std::string& prompt, reply_callback done,
                         std::stop_token stop) {
  std::unique_ptr<pending> request;
  try {
    request = std::make_unique<pending>(*this, done, stop, options_, std::move(url), prompt);
  } catch (...) {
    // curl_easy_init or an allocation failed: the request never existed.
    done(reply_or_error{{}, std::current_exception()});
    return;
  }
  enqueue(std::move(request), stop);
}

void async_client::post(std::string url, std::string body, reply_callback done,
                        std::stop_token stop) {
  std::unique_ptr<pending> request;
  try {
    request = std::make_unique<pending>(*this, done, stop, raw_json, options_, std::move(url),
                                        std::move(body));
  } catch (...) {
    done(reply_or_error{{}, std::current_exception()});  // as in start()
    return;
  }
  enqueue(std::move(request), stop);
}

void async_client::enqueue(std::unique_ptr<pending> request, const std::stop_token& stop) {
  // Registered before the request is queued, so a stop from now on posts a cancel. One posted
  // before the event thread has the request finds nothing to cancel; add() then sees the stop
  // on the token itself. On a token stopped already it posts at once, to the same effect.
  if (stop.stop_possible()) {
    request->on_stop.emplace(stop, pending::post_cancel_fn{this, request->id});
  }
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      // The event thread reads the eventfd before it takes the queue and the cancels, so when
      // either is not empty a wake-up is on its way already.
      wake = queue_.empty() && cancels_.empty();
      queue_.push_back(std::move(request));
    }
  }
  if (request) {  // the client is being destroyed
    request->request.close();
    request->complete(reply_or_error{{}, destroyed(request->request.url())});
    return;
  }
  if (wake) {
    const std::uint64_t one = 1;
    (void)::write(wake_fd_, &one, sizeof one);
  }
}

std::string async_client::complete(std::string url, const std::string& prompt,
                                   std::stop_token stop) {
  std::promise<reply_or_error> promise;
  std::future<reply_or_error> result = promise.get_future();
  start(
      std::move(url), prompt, [&promise](reply_or_error r) { promise.set_value(std::move(r)); },
      std::move(stop));
  return result.get().value();
}

int async_client::on_socket(CURL*, curl_socket_t socket, int what, void* self, void* known) {
  auto* client = static_cast<async_client*>(self);
  if (what == CURL_POLL_REMOVE) {
    ::epoll_ctl(client->epoll_fd_, EPOLL_CTL_DEL, socket, nullptr);
    return 0;
  }
  epoll_event event{};
  event.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
  event.data.fd = socket;
  if (known == nullptr) {
    curl_multi_assign(client->multi_, socket, &in_epoll);
    // EEXIST: a closed socket's number came back before curl said REMOVE for it.
    if (::epoll_ctl(client->epoll_fd_, EPOLL_CTL_ADD, socket, &event) == 0 || errno != EEXIST) {
      return 0;
    }
  }
  ::epoll_ctl(client->epoll_fd_, EPOLL_CTL_MOD, socket, &event);
  return 0;
}

int async_client::on_timer(CURLM*, long timeout_ms, void* self) {
  auto* client = static_cast<async_client*>(self);
  client->timer_due_ns_ = timeout_ms < 0 ? -1 : now_ns() + timeout_ms * 1'000'000;
  return 0;
}

int async_client::wait_ms() const noexcept {
  if (timer_due_ns_ < 0) return -1;
  std::int64_t left = timer_due_ns_ - now_ns();
  return left <= 0 ? 0 : static_cast<int>((left + 999'999) / 1'000'000);
}

void async_client::run() noexcept {
  pthread_setname_np(pthread_self(), "llm-events");  // for ps, top and debuggers
  epoll_event events[64];
  for (;;) {
    int n = ::epoll_wait(epoll_fd_, events, 64, wait_ms());
    bool woken = false;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == wake_fd_) {
        woken = true;
        continue;
      }
      int flags = ((events[i].events & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                  ((events[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                  ((events[i].events & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0);
      act(events[i].data.fd, flags);
    }
    if (woken && !take_queued()) break;
    if (timer_due_ns_ >= 0 && timer_due_ns_ <= now_ns()) {
      timer_due_ns_ = -1;
      act(CURL_SOCKET_TIMEOUT, 0);
    }
  }
  fail_all();
}

bool async_client::take_queued() noexcept {
  std::uint64_t count = 0;
  (void)::read(wake_fd_, &count, sizeof count);  // first: see start()
  queue batch;
  std::vector<std::uint64_t> cancels;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return false;
    batch.swap(queue_);
    cancels.swap(cancels_);
  }
  // Cancels after adds: a cancel taken with its own request then finds it running.
  add(batch);
  for (std::uint64_t id : cancels) cancel(id);
  return true;
}

void async_client::add(queue& batch) noexcept {
  for (std::unique_ptr<pending>& owned : batch) {
    pending* request = owned.get();
    if (request->stop.stop_requested()) {
      // Stopped before it reached the event thread; its posted cancel, if already taken,
      // found nothing to cancel. Nothing was sent.
      request->request.close();
      request->complete(reply_or_error{{}, cancelled(request->request.url())});
      continue;
    }
    CURL* handle = request->request.handle();
    curl_easy_setopt(handle, CURLOPT_PRIVATE, static_cast<void*>(request));
    // Adding sets curl's timer to 0: the next turn of the loop starts the request.
    if (curl_multi_add_handle(multi_, handle) != CURLM_OK) {
      // Only on a bad handle or out of memory; the request ends as curl's failure would.
      request->request.close();
      reply_or_error result;
      result.error = request->request.outcome(CURLE_OUT_OF_MEMORY, result.text);
      request->complete(std::move(result));
      continue;
    }
    running_.emplace(request->id, owned.release());
    requests_.fetch_add(1, std::memory_order_relaxed);
    int now = in_flight_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (now > peak_.load(std::memory_order_relaxed)) {
      peak_.store(now, std::memory_order_relaxed);  // only this thread raises peak_
    }
  }
  batch.clear();
}

void async_client::act(curl_socket_t socket, int events) noexcept {
  int still_running = 0;
  curl_multi_socket_action(multi_, socket, events, &still_running);
  int left = 0;
  while (CURLMsg* message = curl_multi_info_read(multi_, &left)) {
    // The message dies with the handle's removal, so finish takes what it needs as arguments.
    if (message->msg == CURLMSG_DONE) finish(message->easy_handle, message->data.result);
  }
}

void async_client::finish(CURL* handle, CURLcode rc) noexcept {
  void* user = nullptr;
  curl_easy_getinfo(handle, CURLINFO_PRIVATE, &user);
  std::unique_ptr<pending> request(static_cast<pending*>(user));
  running_.erase(request->id);
  curl_multi_remove_handle(multi_, handle);
  request->request.close();  // the connection goes back to the multi handle's cache
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  reply_or_error result;
  result.error = request->request.outcome(rc, result.text);
  request->complete(std::move(result));
}

void async_client::post_cancel(std::uint64_t id) noexcept {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;                      // fail_all ends every request
    wake = queue_.empty() && cancels_.empty();  // see start()
    cancels_.push_back(id);
  }
  if (wake) {
    const std::uint64_t one = 1;
    (void)::write(wake_fd_, &one, sizeof one);
  }
}

void async_client::cancel(std::uint64_t id) noexcept {
  auto at = running_.find(id);
  if (at == running_.end()) return;  // it ended first, or add() found it stopped
  std::unique_ptr<pending> request(at->second);
  running_.erase(at);
  // A transfer removed before its end loses its connection, which curl closes: the server
  // sees the client go (nginx logs 499).
  curl_multi_remove_handle(multi_, request->request.handle());
  request->request.close();
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  request->complete(reply_or_error{{}, cancelled(request->request.url())});
}

void async_client::fail_all() noexcept {
  queue queued;
  {
    std::lock_guard lock(mutex_);
    queued.swap(queue_);
  }
  for (const auto& [id, raw] : running_) {
    std::unique_ptr<pending> request(raw);
    curl_multi_remove_handle(multi_, request->request.handle());
    request->request.close();
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    request->complete(reply_or_error{{}, destroyed(request->request.url())});
  }
  running_.clear();
  for (std::unique_ptr<pending>& request : queued) {
    request->request.close();
    request->complete(reply_or_error{{}, destroyed(request->request.url())});
  }
}

}  // namespace llm
