#include "child_walk.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace vigil::detail {

namespace {

// The child's buffer: frames are appended, and `committed` moves past a
// frame once it is whole. The fault handler writes [0, committed).
std::string* child_buf = nullptr;
volatile size_t committed = 0;
int child_fd = -1;
frame_writer* active_writer = nullptr;
constexpr size_t flush_at = size_t{256} << 10;

void write_all(int fd, const char* p, size_t n) noexcept {
  while (n > 0) {
    auto k = ::write(fd, p, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return;
    p += k;
    n -= static_cast<size_t>(k);
  }
}

void on_fault(int sig) {
  if (child_buf != nullptr && child_fd >= 0)
    write_all(child_fd, child_buf->data(), committed);
  // Die from the signal, so that the parent sees which one.
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void put_u32(std::string& out, uint32_t n) {
  char b[4];
  std::memcpy(b, &n, 4);
  out.append(b, 4);
}

void put_u64(std::string& out, uint64_t n) {
  char b[8];
  std::memcpy(b, &n, 8);
  out.append(b, 8);
}

} // namespace

frame_writer::frame_writer(int fd) : fd_(fd) {
  child_buf = new std::string;
  child_buf->reserve(flush_at + (size_t{64} << 10));
  committed = 0;
  child_fd = fd;
  active_writer = this;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_fault;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT})
    ::sigaction(sig, &sa, nullptr);
}

frame_writer::~frame_writer() {
  flush();
  active_writer = nullptr;
}

// Frame: type u8, length of `a` u32, `a`, length of `b` u32, `b`.
void frame_writer::put(frame type, std::string_view a, std::string_view b) {
  auto& buf = *child_buf;
  buf += static_cast<char>(type);
  put_u32(buf, static_cast<uint32_t>(a.size()));
  buf.append(a.data(), a.size());
  put_u32(buf, static_cast<uint32_t>(b.size()));
  buf.append(b.data(), b.size());
  committed = buf.size();
  if (buf.size() >= flush_at)
    flush();
}

void frame_writer::put_u64(frame type, uint64_t n, std::string_view a) {
  std::string b;
  vigil::detail::put_u64(b, n);
  put(type, a, b);
}

void frame_writer::flush() {
  auto& buf = *child_buf;
  write_all(fd_, buf.data(), committed);
  buf.clear();
  committed = 0;
}

std::string child_result::failure() const {
  if (timed_out)
    return "the walk did not finish in time and was killed";
  if (signal != 0)
    return "the walk died from signal " + std::to_string(signal) + " ("
           + strsignal(signal) + ")";
  if (exit_code != 0)
    return "the walk exited with code " + std::to_string(exit_code);
  return {};
}

child_result run_child(
  const std::function<void(frame_writer&)>& body,
  const std::function<void(frame, std::string_view, std::string_view,
                           uint64_t)>& on_frame,
  std::chrono::milliseconds timeout) {
  child_result res;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    res.exit_code = 127;
    return res;
  }
  auto pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    res.exit_code = 127;
    return res;
  }
  if (pid == 0) {
    ::close(fds[0]);
    // LMDB prints its assertions before it aborts; the callback has put
    // them into a problem frame already.
    if (int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC); null >= 0)
      ::dup2(null, 2);
    try {
      frame_writer w{fds[1]};
      body(w);
      w.put(frame::done);
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string in;
  char chunk[1 << 16];
  size_t pos = 0;
  bool open = true;
  while (open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::kill(pid, SIGKILL);
      res.timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    auto rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR)
      continue;
    if (rc == 0)
      continue;
    auto n = ::read(fds[0], chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      open = false;
    } else {
      in.append(chunk, static_cast<size_t>(n));
    }
    // Hand over every whole frame.
    for (;;) {
      auto avail = in.size() - pos;
      if (avail < 5)
        break;
      uint32_t la, lb;
      std::memcpy(&la, in.data() + pos + 1, 4);
      if (avail < 5 + size_t{la} + 4)
        break;
      std::memcpy(&lb, in.data() + pos + 5 + la, 4);
      auto whole = 5 + size_t{la} + 4 + size_t{lb};
      if (avail < whole)
        break;
      auto type = static_cast<frame>(in[pos]);
      std::string_view a{in.data() + pos + 5, la};
      std::string_view b{in.data() + pos + 9 + la, lb};
      uint64_t u = 0;
      if (b.size() == 8)
        std::memcpy(&u, b.data(), 8);
      on_frame(type, a, b, u);
      pos += whole;
    }
    if (pos > (size_t{1} << 20)) {
      in.erase(0, pos);
      pos = 0;
    }
  }
  ::close(fds[0]);
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    // retry
  }
  if (WIFSIGNALED(wstatus)) {
    res.signal = res.timed_out ? 0 : WTERMSIG(wstatus);
  } else if (WIFEXITED(wstatus)) {
    res.exit_code = WEXITSTATUS(wstatus);
  }
  return res;
}

int open_for_walk(const std::string& path, bool single_file, bool no_lock,
                  MDB_env** env) {
  if (auto rc = mdb_env_create(env); rc != 0)
    return rc;
  unsigned flags = MDB_RDONLY | MDB_NOTLS;
  if (single_file)
    flags |= MDB_NOSUBDIR;
  if (no_lock)
    flags |= MDB_NOLOCK;
  // LMDB's own assertions (a damaged page can trip them) become a problem
  // frame instead of a line on stderr; LMDB aborts after the callback.
  mdb_env_set_assert(*env, [](MDB_env*, const char* msg) {
    if (active_writer != nullptr)
      active_writer->put(frame::problem,
                         std::string{"LMDB assertion: "} + msg);
  });
  auto rc = mdb_env_set_maxdbs(*env, 16);
  if (rc == 0)
    rc = mdb_env_open(*env, path.c_str(), flags, 0600);
  if (rc != 0) {
    mdb_env_close(*env);
    *env = nullptr;
  }
  return rc;
}

} // namespace vigil::detail
