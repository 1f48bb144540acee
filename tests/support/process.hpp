#pragma once

// Runs a real child process with its stdout and stderr captured, bounded in
// time: a test that starts `vigil` must never hang on it.

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace vigil::test {

struct process_result {
  int exit_code = -1; ///< -1 if it did not exit normally
  int signal = 0;
  std::string out;
  std::string err;
  bool timed_out = false;
  long max_rss_kib = 0; ///< its peak resident set (getrusage's ru_maxrss)
};

/// Runs `argv`; after `stop_after` (if set) sends `sig` once `err` contains
/// `wait_for` (or at once if `wait_for` is empty); kills it with SIGKILL
/// after `limit`.
inline process_result run_process(const std::vector<std::string>& argv,
                                  std::chrono::milliseconds limit,
                                  int sig = 0, std::string wait_for = {}) {
  process_result r;
  int out_fd[2], err_fd[2];
  if (pipe(out_fd) != 0 || pipe(err_fd) != 0)
    return r;
  auto pid = fork();
  if (pid == 0) {
    dup2(out_fd[1], STDOUT_FILENO);
    dup2(err_fd[1], STDERR_FILENO);
    close(out_fd[0]);
    close(err_fd[0]);
    close(out_fd[1]);
    close(err_fd[1]);
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out_fd[1]);
  close(err_fd[1]);
  auto until = std::chrono::steady_clock::now() + limit;
  bool signalled = sig == 0;
  pollfd fds[2] = {{out_fd[0], POLLIN, 0}, {err_fd[0], POLLIN, 0}};
  int open = 2;
  char buf[4096];
  while (open > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  until - std::chrono::steady_clock::now())
                  .count();
    if (left <= 0) {
      kill(pid, SIGKILL);
      r.timed_out = true;
      break;
    }
    if (!signalled
        && (wait_for.empty() || r.err.find(wait_for) != std::string::npos)) {
      kill(pid, sig);
      signalled = true;
    }
    if (poll(fds, 2, static_cast<int>(std::min<long>(left, 50))) < 0)
      break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP)) == 0)
        continue;
      auto k = read(fds[i].fd, buf, sizeof(buf));
      if (k <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open;
      } else {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(k));
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0)
      close(f.fd);
  int status = 0;
  rusage ru{};
  wait4(pid, &status, 0, &ru);
  r.max_rss_kib = ru.ru_maxrss;
  if (WIFEXITED(status))
    r.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    r.signal = WTERMSIG(status);
  return r;
}

} // namespace vigil::test
