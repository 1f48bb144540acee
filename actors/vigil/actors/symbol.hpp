#pragma once

#include <cstddef>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>

namespace vigil {

namespace detail {

/// What the empty symbol points to.
extern const std::string empty_symbol_name;

} // namespace detail

/// An interned, immutable string: one pointer wide, copied and compared by
/// pointer. Envelopes carry their Protobuf type name as a symbol, so a send
/// neither allocates nor copies the name, and a handler lookup hashes a
/// pointer instead of the name.
///
/// Interning takes a process-wide lock and keeps the string for the life of
/// the process, so symbols are for bounded sets of names (message types),
/// not for data. Make a symbol once, outside the hot path, and copy it.
/// Envelopes loaded from disk intern their type names too; once envelopes
/// come from other nodes, a peer could grow the table with made-up names
/// (to be bounded when clustering lands).
class symbol {
public:
  /// The empty symbol.
  symbol() noexcept : p_(&detail::empty_symbol_name) {
    // nop
  }

  /// Interns `s` (takes a lock unless `s` is empty).
  symbol(std::string_view s); // NOLINT: implicit, like std::string
  symbol(const std::string& s) : symbol(std::string_view{s}) {
    // nop
  }
  symbol(const char* s) : symbol(std::string_view{s}) {
    // nop
  }

  const std::string& str() const noexcept {
    return *p_;
  }

  operator const std::string&() const noexcept { // NOLINT: implicit
    return *p_;
  }

  const char* c_str() const noexcept {
    return p_->c_str();
  }

  bool empty() const noexcept {
    return p_->empty();
  }

  size_t size() const noexcept {
    return p_->size();
  }

  /// Identity of the interned string: equal symbols have equal ids.
  const void* id() const noexcept {
    return p_;
  }

  friend bool operator==(const symbol& x, const symbol& y) noexcept {
    return x.p_ == y.p_;
  }
  friend bool operator!=(const symbol& x, const symbol& y) noexcept {
    return x.p_ != y.p_;
  }
  friend bool operator==(const symbol& x, std::string_view y) noexcept {
    return *x.p_ == y;
  }
  friend bool operator!=(const symbol& x, std::string_view y) noexcept {
    return *x.p_ != y;
  }
  friend bool operator==(std::string_view x, const symbol& y) noexcept {
    return x == *y.p_;
  }
  friend bool operator==(const symbol& x, const char* y) noexcept {
    return *x.p_ == y;
  }
  friend bool operator==(const symbol& x, const std::string& y) noexcept {
    return *x.p_ == y;
  }
  friend bool operator!=(const symbol& x, const char* y) noexcept {
    return *x.p_ != y;
  }
  friend bool operator!=(const symbol& x, const std::string& y) noexcept {
    return *x.p_ != y;
  }

  friend std::string operator+(const std::string& x, const symbol& y) {
    return x + *y.p_;
  }
  friend std::string operator+(std::string&& x, const symbol& y) {
    return std::move(x) + *y.p_;
  }
  friend std::string operator+(const char* x, const symbol& y) {
    return x + *y.p_;
  }

private:
  const std::string* p_;
};

std::ostream& operator<<(std::ostream& out, const symbol& x);

/// Hashes the identity, not the characters.
struct symbol_hash {
  size_t operator()(const symbol& x) const noexcept {
    return std::hash<const void*>{}(x.id());
  }
};

} // namespace vigil
