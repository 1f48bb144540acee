#pragma once

#include <cstdint>
#include <typeinfo>

#include <google/protobuf/message.h>

#include "vigil/actors/symbol.hpp"

namespace vigil {

/// The interned Protobuf type name of `msg`. Each thread caches names by
/// C++ type in a small direct-mapped table: a hit neither calls
/// GetDescriptor() (a call_once each time) nor takes the interning lock,
/// also for senders that alternate types.
inline symbol type_symbol(const google::protobuf::Message& msg) {
  struct slot {
    const std::type_info* type = nullptr;
    symbol name;
  };
  thread_local slot cache[16];
  auto* ti = &typeid(msg);
  auto& sl = cache[(reinterpret_cast<uintptr_t>(ti) >> 4) % 16];
  if (sl.type != ti) {
    sl.name = symbol{msg.GetDescriptor()->full_name()};
    sl.type = ti;
  }
  return sl.name;
}

/// The interned Protobuf type name of `T`.
template <class T>
const symbol& type_symbol() {
  static const symbol name{T::descriptor()->full_name()};
  return name;
}

} // namespace vigil
