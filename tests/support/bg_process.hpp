#pragma once

// A real child process that runs while the test goes on (a node, a
// Prometheus server), its stdout and stderr in files; stopped with a signal
// and waited for with a deadline, and killed with SIGKILL if the test
// leaves it running.

#include <chrono>
#include <csignal>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace vigil::test {

class bg_process {
public:
  /// Starts `argv` (argv[0] a path) with stdout in `out` and stderr in
  /// `err` (files, created or truncated).
  bg_process(const std::vector<std::string>& argv, std::string out,
             std::string err)
    : out_(std::move(out)), err_(std::move(err)) {
    pid_ = fork();
    if (pid_ == 0) {
      int o = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      int e = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (o < 0 || e < 0)
        _exit(126);
      dup2(o, STDOUT_FILENO);
      dup2(e, STDERR_FILENO);
      std::vector<char*> args;
      for (auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }

  ~bg_process() {
    if (pid_ > 0 && !done_) {
      ::kill(pid_, SIGKILL);
      int st = 0;
      waitpid(pid_, &st, 0);
    }
  }

  bg_process(const bg_process&) = delete;
  bg_process& operator=(const bg_process&) = delete;

  bool started() const {
    return pid_ > 0;
  }

  void signal(int sig) {
    if (pid_ > 0 && !done_)
      ::kill(pid_, sig);
  }

  /// Waits up to `limit` for it to exit: its exit code, 128 + its signal,
  /// or -1 if it still runs.
  int wait(std::chrono::milliseconds limit) {
    if (done_)
      return code_;
    auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
      int st = 0;
      auto r = waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        done_ = true;
        code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return code_;
      }
      if (std::chrono::steady_clock::now() >= until)
        return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
  }

  /// Whether it still runs.
  bool running() {
    return wait(std::chrono::milliseconds{0}) == -1;
  }

  std::string out() const {
    return slurp(out_);
  }
  std::string err() const {
    return slurp(err_);
  }

private:
  static std::string slurp(const std::string& path) {
    std::ifstream in{path};
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::string out_, err_;
  pid_t pid_ = -1;
  bool done_ = false;
  int code_ = -1;
};

} // namespace vigil::test
