// my_agents: an agent that calls a tool, run by vigil under the policy file
// agents.yaml, its state in a data dir.
//
//   my_agents POLICY DATA_DIR TEXT...
//
// Each TEXT goes to docs/summarizer, which counts its words through the
// tool `words` and keeps a tally; run it again on the same data dir and the
// tally goes on.
#include <iostream>

#include <vigil/vigil.hpp>

#include "docs.pb.h"

using namespace std::chrono_literals;

// The tool: a C++ callable, declared in agents.yaml with its timeout and
// retries. Its first call fails as a flaky service would (a 503), so every
// run shows a retry.
vigil::tool_result<docs::WordCount> count_words(const docs::Document& d,
                                                vigil::tool_call&) {
  static int calls = 0;
  if (++calls == 1)
    return vigil::tool_error::transient("503 from the word counter");
  docs::WordCount n;
  bool in_word = false;
  for (char c : d.text()) {
    bool letter = c != ' ' && c != '\t' && c != '\n';
    if (letter && !in_word)
      n.set_words(n.words() + 1);
    in_word = letter;
  }
  return n;
}

// The agent: its state (a Tally) is committed with every document it takes.
class summarizer : public vigil::agent<docs::Tally> {
public:
  static void define(vigil::handlers<summarizer>& h) {
    h.on<docs::Document>(&summarizer::take);
  }
  void take(vigil::context& ctx, const docs::Document& d) {
    auto reply = ctx.defer();
    ctx.call_tool<docs::WordCount>("words", d,
      [this, reply](docs::WordCount n) mutable {
        state().set_documents(state().documents() + 1);
        state().set_words(state().words() + n.words());
        docs::Summary s;
        s.set_words(n.words());
        s.set_documents(state().documents());
        reply.deliver(s);
      },
      [reply](const caf::error& e) mutable { reply.fail(e); });
  }
};

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: my_agents POLICY DATA_DIR TEXT...\n";
    return 64;
  }
  vigil::registry types;
  types.add<summarizer>("summarizer");
  types.add_tool<docs::Document, docs::WordCount>("count_words", count_words);
  vigil::cli::loaded_policy policy;
  auto errors = vigil::cli::load_policy_file(argv[1], types, policy);
  for (auto& e : errors)
    std::cerr << e.to_string() << '\n';
  if (!errors.empty())
    return 2;
  policy.node.data_dir = argv[2];
  vigil::node node{std::move(types), policy.node};
  if (auto err = node.start(policy.name, policy.tree)) {
    std::cerr << vigil::describe(err) << '\n';
    return 1;
  }
  std::cout << "vigil " << vigil::version_string << '\n';
  for (int i = 3; i < argc; ++i) {
    docs::Document d;
    d.set_text(argv[i]);
    auto r = node.call<docs::Summary>(policy.name + "/summarizer", d, 10s);
    if (!r) {
      std::cerr << "summarizer: " << vigil::describe(r.error()) << '\n';
      return 1;
    }
    std::cout << "document " << r->value.documents() << ": "
              << r->value.words()
              << (r->value.words() == 1 ? " word\n" : " words\n");
  }
  return 0;
}
