#pragma once

// A child process for the kill tests: started with its stdout piped, read
// for "progress=<n>" lines until a target, then killed with SIGKILL by the
// test (crash_test, shared_kill_test).

#include <cstdio>
#include <string>
#include <vector>

#include <unistd.h>

namespace vigil::test {

struct child {
  pid_t pid = -1;
  int out = -1; ///< read end of its stdout
};

/// Starts `argv` (argv[0] is the binary's path) with its stdout piped.
inline child spawn_child(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe(fds) != 0)
    return {};
  auto pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  return {pid, fds[0]};
}

/// Everything left on `fd` until EOF; closes it.
inline std::string read_all(int fd) {
  std::string out;
  char buf[256];
  ssize_t k;
  while ((k = read(fd, buf, sizeof(buf))) > 0)
    out.append(buf, static_cast<size_t>(k));
  close(fd);
  return out;
}

/// Reads the child's "progress=<n>" lines until one reaches `target`.
/// Returns false at EOF (the child exited). `last` gets the latest value;
/// `rest` keeps what was read past the last whole line.
inline bool wait_for_progress(int fd, long long target, long long& last,
                              std::string& rest) {
  char buf[256];
  for (;;) {
    size_t nl;
    while ((nl = rest.find('\n')) != std::string::npos) {
      long long v;
      if (std::sscanf(rest.c_str(), "progress=%lld", &v) == 1)
        last = v;
      rest.erase(0, nl + 1);
      if (last >= target)
        return true;
    }
    auto k = read(fd, buf, sizeof(buf));
    if (k <= 0)
      return false;
    rest.append(buf, static_cast<size_t>(k));
  }
}

} // namespace vigil::test
