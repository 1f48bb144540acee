// The record frame (format byte + CRC-32C) and CRC-32C itself.

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "vigil/persistence/crc32c.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/store.pb.h"

using namespace vigil;

namespace {

std::string repeat(unsigned char c, size_t n) {
  return std::string(n, static_cast<char>(c));
}

} // namespace

// RFC 3720, appendix B.4, and the check value of the CRC catalogue.
TEST(crc32c, known_answers) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(repeat(0x00, 32)), 0x8A9136AAu);
  EXPECT_EQ(crc32c(repeat(0xff, 32)), 0x62A8AB43u);
  std::string up, down;
  for (int i = 0; i < 32; ++i) {
    up += static_cast<char>(i);
    down += static_cast<char>(31 - i);
  }
  EXPECT_EQ(crc32c(up), 0x46DD794Eu);
  EXPECT_EQ(crc32c(down), 0x113FDB5Cu);
  EXPECT_EQ(crc32c(std::string_view{}), 0u);
}

TEST(crc32c, portable_and_hardware_agree_and_sums_chain) {
  std::mt19937_64 rng{42};
  std::string buf(4096 + 16, '\0');
  for (auto& c : buf)
    c = static_cast<char>(rng());
  for (size_t off = 0; off < 9; ++off)
    for (size_t n : {0, 1, 7, 8, 9, 15, 63, 64, 65, 1000, 4096}) {
      auto p = buf.data() + off;
      auto want = detail::crc32c_portable(p, n, 0);
      EXPECT_EQ(crc32c(p, n), want) << "off " << off << " n " << n;
      // Continuing a sum equals summing the whole.
      auto half = n / 2;
      EXPECT_EQ(crc32c(p + half, n - half, crc32c(p, half)), want);
    }
  std::cout << "crc32c uses "
            << (detail::crc32c_hardware() ? "the SSE 4.2 instruction"
                                          : "the table")
            << "\n";
}

TEST(record, round_trip) {
  records::JournalEntry je;
  je.set_format(2);
  je.set_seq(7);
  je.mutable_env()->set_type("vigil.test.Ping");
  je.mutable_env()->set_origin(0x0123456789abcdefull);
  je.mutable_env()->set_span_id(99);
  auto bytes = encode_record(je);
  ASSERT_EQ(bytes.size(), record_header + je.ByteSizeLong());
  EXPECT_EQ(static_cast<uint8_t>(bytes[0]), record_format);
  records::JournalEntry back;
  ASSERT_EQ(decode_record(bytes, back), record_fault::none);
  EXPECT_EQ(back.SerializeAsString(), je.SerializeAsString());
  // An empty record is a frame with no body.
  records::Meta empty;
  auto eb = encode_record(empty);
  EXPECT_EQ(eb.size(), record_header);
  EXPECT_EQ(decode_record(eb, empty), record_fault::none);
}

TEST(record, every_single_bit_flip_is_caught) {
  records::Snapshot s;
  s.set_format(2);
  s.set_path("a/b");
  s.set_state(std::string(100, 'x'));
  s.set_applied_seq(12345);
  auto good = encode_record(s);
  for (size_t i = 0; i < good.size(); ++i)
    for (int bit = 0; bit < 8; ++bit) {
      auto bad = good;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      records::Snapshot out;
      auto f = decode_record(bad, out);
      EXPECT_NE(f, record_fault::none) << "byte " << i << " bit " << bit;
      if (i == 0)
        EXPECT_TRUE(f == record_fault::unframed
                    || f == record_fault::unknown_format);
      else
        EXPECT_EQ(f, record_fault::checksum) << "byte " << i;
    }
}

TEST(record, faults_are_named) {
  records::Snapshot s;
  s.set_path("p");
  auto body = s.SerializeAsString();
  records::Snapshot out;
  // Format 1: bare Protobuf bytes.
  EXPECT_EQ(decode_record(body, out), record_fault::unframed);
  EXPECT_NE(describe(record_fault::unframed, body, out)
              .find("expected 0x02): bare bytes, as format 1 wrote them"),
            std::string::npos);
  EXPECT_EQ(decode_record("", out), record_fault::truncated);
  EXPECT_EQ(decode_record(std::string{"\x02\x01\x02"}, out),
            record_fault::truncated);
  std::string future = encode_record(s);
  future[0] = 3;
  EXPECT_EQ(decode_record(future, out), record_fault::unknown_format);
  EXPECT_NE(describe(record_fault::unknown_format, future, out)
              .find("unknown record format 3"),
            std::string::npos);
  auto flipped = encode_record(s);
  flipped.back() = static_cast<char>(flipped.back() ^ 1);
  auto why = describe(decode_record(flipped, out), flipped, out);
  EXPECT_NE(why.find("checksum mismatch (stored 0x"), std::string::npos)
    << why;
  // A valid frame around bytes that are not the record.
  auto framed_garbage = frame_record("\xff\xff\xff garbage");
  EXPECT_EQ(decode_record(framed_garbage, out), record_fault::unparsable);
  EXPECT_NE(describe(record_fault::unparsable, framed_garbage, out)
              .find("vigil.records.Snapshot"),
            std::string::npos);
}
