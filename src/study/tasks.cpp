// Procedural study tasks (include/prism/study/tasks.h, docs/study.md "The tasks").
#include "prism/study/tasks.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/hash.h"

namespace prism::study {

namespace {

class Rng {
 public:
  // One independent stream per (seed, purpose), so adding a domain does not change another's data.
  Rng(uint64_t seed, const std::string& stream) : state_(splitmix64(seed)) {
    for (unsigned char c : stream) state_ = splitmix64(state_ ^ c);
  }
  uint64_t next() { return state_ = splitmix64(state_); }
  /// Uniform integer in [lo, hi] (rejection sampling: no modulo bias).
  int64_t uniform(int64_t lo, int64_t hi) {
    const auto span = static_cast<uint64_t>(hi - lo) + 1;
    const uint64_t limit = ~uint64_t{0} - (~uint64_t{0} % span);
    uint64_t x = next();
    while (x >= limit) x = next();
    return lo + static_cast<int64_t>(x % span);
  }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<size_t>(uniform(0, static_cast<int64_t>(v.size()) - 1))];
  }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (int64_t i = static_cast<int64_t>(v.size()) - 1; i > 0; --i)
      std::swap(v[static_cast<size_t>(i)], v[static_cast<size_t>(uniform(0, i))]);
  }

 private:
  uint64_t state_;
};

std::string str(int64_t x) { return std::to_string(x); }

std::string capitalize(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

/// One generated problem: the prompt text (ends with "<think>"), the worked completion, the gold
/// answer and the fields an independent checker needs.
struct Problem {
  std::string key;       ///< identity for disjointness (see tasks.h)
  std::string question;  ///< the prompt without "Answer: <think>"
  std::string solution;  ///< " steps </think> \boxed{answer}"
  std::string answer;
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  ///< oracle fields (expr, code, choices, ...)
};

std::string prompt_of(const Problem& p) { return "Question: " + p.question + "\nAnswer: <think>"; }
std::string document_of(const Problem& p) { return prompt_of(p) + p.solution; }

// ---------------------------------------------------------------------------------------------
// math: a chain of operations on a count of objects, told as a short story.

struct Person {
  const char* name;
  const char* pron;
};
const std::vector<Person> kPeople = {{"Mia", "she"},  {"Tom", "he"},  {"Ana", "she"},  {"Leo", "he"},  {"Ivy", "she"},
                                     {"Sam", "he"},   {"Zoe", "she"}, {"Max", "he"},   {"Eva", "she"}, {"Ben", "he"},
                                     {"Lily", "she"}, {"Omar", "he"}, {"Nina", "she"}, {"Ravi", "he"}};
const std::vector<std::string> kItems = {"apples", "pens", "coins", "stamps", "shells", "marbles", "cards",
                                         "books",  "eggs", "beads", "cups",   "stones", "kites",   "hats"};

Problem make_math(Rng& rng, const MathTaskConfig& c) {
  const Person& who = rng.pick(kPeople);
  const std::string& item = rng.pick(kItems);
  const std::string pron = capitalize(who.pron);
  const int64_t steps = rng.uniform(c.min_steps, c.max_steps);
  int64_t cur = rng.uniform(1, c.max_operand);
  Problem p;
  p.key = str(cur);
  std::string expr = str(cur);
  p.question = std::string(who.name) + " has " + str(cur) + " " + item + ".";
  std::string work;
  for (int64_t s = 0; s < steps; ++s) {
    // '*' keeps results small (x2, x3 of at most 2 * max_operand); '-' needs something to take.
    std::vector<char> ops = {'+'};
    if (cur >= 2) ops.push_back('-');
    if (c.multiply && cur <= 2 * c.max_operand) ops.push_back('*');
    const char op = rng.pick(ops);
    int64_t b = 0, next = 0;
    std::string sentence;
    if (op == '+') {
      b = rng.uniform(1, c.max_operand);
      next = cur + b;
      sentence = rng.pick(std::vector<std::string>{" buys ", " finds ", " gets "}) + str(b) + " more.";
      sentence = " " + pron + sentence;
    } else if (op == '-') {
      b = rng.uniform(1, std::min(cur - 1, c.max_operand));
      next = cur - b;
      sentence = " " + pron + rng.pick(std::vector<std::string>{" gives away ", " loses ", " sells "}) + str(b) + ".";
    } else {
      b = rng.uniform(2, 3);
      next = cur * b;
      sentence = std::string(" Then the number of ") + item + (b == 2 ? " doubles." : " triples.");
    }
    const char* shown = op == '*' ? " * " : (op == '+' ? " + " : " - ");
    work += (s ? " " : "") + str(cur) + shown + str(b) + " = " + str(next) + ".";
    p.key += std::string(1, op) + str(b);
    expr = "(" + expr + shown + str(b) + ")";
    p.question += sentence;
    cur = next;
  }
  p.question += " How many " + item + " does " + who.name + " have now?";
  p.answer = str(cur);
  p.solution = " " + work + " </think> \\boxed{" + p.answer + "}";
  p.extra["expr"] = expr;
  return p;
}

// ---------------------------------------------------------------------------------------------
// code: what a one-line Python expression over a short list prints.

std::string list_text(const std::vector<int64_t>& xs) {
  std::string s = "[";
  for (size_t i = 0; i < xs.size(); ++i) s += (i ? ", " : "") + str(xs[i]);
  return s + "]";
}

Problem make_code(Rng& rng, const CodeTaskConfig& c) {
  std::vector<int64_t> xs(static_cast<size_t>(c.list_len));
  for (auto& x : xs) x = rng.uniform(0, c.max_value);
  const auto n = static_cast<int64_t>(xs.size());
  std::string line, work;
  int64_t result = 0;
  switch (rng.uniform(0, 4)) {
    case 0: {  // two indexed elements
      const int64_t i = rng.uniform(0, n - 1);
      int64_t j = rng.uniform(0, n - 2);
      if (j >= i) ++j;
      const auto a = xs[static_cast<size_t>(i)], b = xs[static_cast<size_t>(j)];
      result = a + b;
      line = "print(xs[" + str(i) + "] + xs[" + str(j) + "])";
      work = "xs[" + str(i) + "] = " + str(a) + ", xs[" + str(j) + "] = " + str(b) + ", " + str(a) + " + " + str(b) +
             " = " + str(result) + ".";
      break;
    }
    case 1: {
      const auto hi = *std::max_element(xs.begin(), xs.end()), lo = *std::min_element(xs.begin(), xs.end());
      result = hi - lo;
      line = "print(max(xs) - min(xs))";
      work = "max = " + str(hi) + ", min = " + str(lo) + ", " + str(hi) + " - " + str(lo) + " = " + str(result) + ".";
      break;
    }
    case 2: {
      const int64_t t = rng.uniform(0, c.max_value - 1);
      std::vector<int64_t> kept;
      for (auto x : xs)
        if (x > t) kept.push_back(x);
      result = static_cast<int64_t>(kept.size());
      line = "print(len([x for x in xs if x > " + str(t) + "]))";
      work = "x > " + str(t) + ": " + list_text(kept) + ", count = " + str(result) + ".";
      break;
    }
    case 3: {
      const int64_t k = rng.uniform(2, n);
      std::vector<int64_t> head(xs.begin(), xs.begin() + k);
      std::string sum;
      for (size_t i = 0; i < head.size(); ++i) {
        sum += (i ? " + " : "") + str(head[i]);
        result += head[i];
      }
      line = "print(sum(xs[:" + str(k) + "]))";
      work = "xs[:" + str(k) + "] = " + list_text(head) + ", " + sum + " = " + str(result) + ".";
      break;
    }
    default: {
      std::vector<int64_t> sorted = xs;
      std::sort(sorted.begin(), sorted.end());
      const int64_t k = rng.uniform(0, n - 1);
      result = sorted[static_cast<size_t>(k)];
      line = "print(sorted(xs)[" + str(k) + "])";
      work = "sorted = " + list_text(sorted) + ", index " + str(k) + " is " + str(result) + ".";
      break;
    }
  }
  Problem p;
  const std::string code = "xs = " + list_text(xs) + "\n" + line;
  p.key = code;
  p.question = "What does this Python code print?\n" + code;
  p.answer = str(result);
  p.solution = " " + work + " </think> \\boxed{" + p.answer + "}";
  p.extra["code"] = code;
  return p;
}

// ---------------------------------------------------------------------------------------------
// science: invented creatures with four attributes, stated in the general text.

struct Attribute {
  const char* name;
  std::vector<std::string> values;
};
const std::array<Attribute, 4> kAttributes = {{
    {"colour", {"red", "blue", "green", "yellow", "purple", "orange", "white", "black"}},
    {"home", {"desert", "forest", "river", "mountains", "swamp", "caves", "meadow", "beach"}},
    {"food", {"seeds", "fish", "leaves", "insects", "berries", "roots", "mushrooms", "grass"}},
    {"legs", {"two", "four", "six", "eight", "ten", "twelve", "no", "three"}},
}};

struct Creature {
  std::string name;
  std::array<std::string, 4> value;  ///< indexed like kAttributes
};

std::vector<Creature> make_creatures(uint64_t seed, int64_t count) {
  Rng rng(seed, "science/creatures");
  static const std::vector<std::string> onsets = {"b", "d", "f", "g",  "k",  "l",  "m",  "n",  "p",  "r",  "s",
                                                  "t", "v", "z", "br", "gl", "kr", "pl", "sn", "tr", "sk", "dr"};
  static const std::vector<std::string> vowels = {"a", "e", "i", "o", "u", "oo", "ai"};
  static const std::vector<std::string> codas = {"", "n", "l", "r", "x", "k", "sh", "m"};
  std::set<std::string> used;
  std::vector<Creature> out;
  // Names are words that occur nowhere else in the text, so a fact can only come from its sentences.
  while (static_cast<int64_t>(out.size()) < count) {
    std::string name =
        rng.pick(onsets) + rng.pick(vowels) + rng.pick(codas) + rng.pick(onsets) + rng.pick(vowels) + rng.pick(codas);
    if (name.size() < 5 || !used.insert(name).second) continue;
    Creature c;
    c.name = name;
    for (size_t a = 0; a < kAttributes.size(); ++a) c.value[a] = rng.pick(kAttributes[a].values);
    out.push_back(std::move(c));
  }
  return out;
}

std::string legs_phrase(const std::string& v) { return v + " legs"; }

/// A paragraph stating all four facts of a creature; `style` picks the wording.
std::string fact_document(const Creature& c, int64_t style) {
  const auto& [colour, home, food, legs] = c.value;
  switch (style % 3) {
    case 0:
      return "The " + c.name + " is a " + colour + " creature that lives in the " + home + ". The " + c.name +
             " eats " + food + " and has " + legs_phrase(legs) + ".";
    case 1:
      return "In the " + home + " you can find the " + c.name + ". The " + c.name + " has " + legs_phrase(legs) +
             ", its body is " + colour + ", and it feeds on " + food + ".";
    default:
      return "Travellers say the " + c.name + " has " + legs_phrase(legs) + ". The " + c.name + " is " + colour +
             " and eats " + food + ". Its home is the " + home + ".";
  }
}

const std::array<const char*, 4> kQuestions = {"What colour is the %s?", "Where does the %s live?",
                                               "What does the %s eat?", "How many legs does the %s have?"};

std::string fact_sentence(const Creature& c, size_t a) {
  switch (a) {
    case 0:
      return "The " + c.name + " is " + c.value[0] + ".";
    case 1:
      return "The " + c.name + " lives in the " + c.value[1] + ".";
    case 2:
      return "The " + c.name + " eats " + c.value[2] + ".";
    default:
      return "The " + c.name + " has " + legs_phrase(c.value[3]) + ".";
  }
}

Problem make_science(Rng& rng, const Creature& c, size_t a, int64_t choices) {
  std::vector<std::string> others;
  for (const auto& v : kAttributes[a].values)
    if (v != c.value[a]) others.push_back(v);
  rng.shuffle(others);
  std::vector<std::string> options(others.begin(), others.begin() + (choices - 1));
  options.push_back(c.value[a]);
  rng.shuffle(options);
  const auto gold = static_cast<size_t>(std::find(options.begin(), options.end(), c.value[a]) - options.begin());
  Problem p;
  p.key = c.name + "|" + kAttributes[a].name;
  std::string q = kQuestions[a];
  q.replace(q.find("%s"), 2, c.name);
  p.question = q + "\n";
  for (size_t i = 0; i < options.size(); ++i)
    p.question += std::string(i ? " " : "") + "(" + static_cast<char>('A' + i) + ") " + options[i];
  p.answer = std::string(1, static_cast<char>('A' + gold));
  p.solution = " " + fact_sentence(c, a) + " </think> \\boxed{" + p.answer + "}";
  p.extra["choices"] = options;
  p.extra["entity"] = c.name;
  p.extra["attribute"] = kAttributes[a].name;
  p.extra["value"] = c.value[a];
  return p;
}

// ---------------------------------------------------------------------------------------------
// general text: fact paragraphs plus short everyday stories (the "web text" of this world).

const std::vector<std::string> kPlaces = {"market", "library", "harbour", "garden", "station",
                                          "bakery", "school",  "museum",  "farm",   "bridge"};
const std::vector<std::string> kWeather = {"it started to rain", "the sun came out", "a cold wind blew",
                                           "the sky turned grey", "snow began to fall"};

std::string story(Rng& rng) {
  const Person& a = rng.pick(kPeople);
  const Person& b = rng.pick(kPeople);
  const std::string place = rng.pick(kPlaces), other = rng.pick(kPlaces), item = rng.pick(kItems);
  const std::string pa = capitalize(a.pron);
  std::vector<std::string> s = {
      std::string(a.name) + " walked to the " + place + " with " + b.name + ".",
      "They looked at some " + item + " and talked about the " + other + ".",
      "On the way home " + rng.pick(kWeather) + ", so they hurried.",
      pa + " said the " + place + " was busier than usual today.",
      std::string(b.name) + " wanted to visit the " + other + " the next morning.",
      "Later " + std::string(a.name) + " wrote a letter about the day.",
  };
  rng.shuffle(s);
  const int64_t n = rng.uniform(2, 4);
  std::string out;
  for (int64_t i = 0; i < n; ++i) out += (i ? " " : "") + s[static_cast<size_t>(i)];
  return out;
}

/// A note that lists invented words with numbers and reads the list back, then looks one entry up.
/// The rest of the general text is templates over a fixed vocabulary that a model can memorise, so
/// nothing in it rewards copying from the context; every task needs exactly that (operands, list
/// items, a creature's name), and without such text a small model forms no copying in its
/// pretraining (docs/study.md, "Why GRPO from mid did not help"). Real web text repeats rare
/// tokens all the time; these notes are this world's version of it.
std::string copy_note(Rng& rng, const std::set<std::string>& avoid) {
  static const std::string letters = "abcdefghijklmnopqrstuvwxyz";
  const Person& who = rng.pick(kPeople);
  const int64_t k = rng.uniform(2, 4);
  std::vector<std::string> entries, words, numbers;
  while (static_cast<int64_t>(words.size()) < k) {
    std::string w;
    for (int64_t i = rng.uniform(5, 7); i > 0; --i) w += letters[static_cast<size_t>(rng.uniform(0, 25))];
    if (avoid.count(w) || std::find(words.begin(), words.end(), w) != words.end()) continue;
    words.push_back(w);
    numbers.push_back(str(rng.uniform(0, 99)));
    entries.push_back(w + " " + numbers.back());
  }
  std::string list;
  for (size_t i = 0; i < entries.size(); ++i) list += (i ? ", " : "") + entries[i];
  const auto j = static_cast<size_t>(rng.uniform(0, k - 1));
  return std::string(who.name) + " made a list: " + list + ". " + capitalize(who.pron) + " read it back: " + list +
         ". The " + words[j] + " is " + numbers[j] + ".";
}

// ---------------------------------------------------------------------------------------------

/// Draws `count` problems whose keys are new (not in `taken`), adding their keys to it.
std::vector<Problem> draw_unique(const std::function<Problem()>& make, int64_t count, std::set<std::string>& taken,
                                 const std::string& what, const std::string& knob) {
  std::vector<Problem> out;
  int64_t misses = 0;
  while (static_cast<int64_t>(out.size()) < count) {
    Problem p = make();
    if (!taken.insert(p.key).second) {
      // Many misses in a row: the problem space is (nearly) exhausted by the requested counts.
      PRISM_CHECK(++misses < 20000, "tasks: ", what, ": only ", taken.size(),
                  " distinct problems found for the requested counts; raise ", knob, " or lower the counts");
      continue;
    }
    misses = 0;
    out.push_back(std::move(p));
  }
  return out;
}

/// Draws `count` problems whose keys are not in `excluded` (repeats among themselves allowed).
std::vector<Problem> draw_outside(const std::function<Problem()>& make, int64_t count,
                                  const std::set<std::string>& excluded, const std::string& what,
                                  const std::string& knob) {
  std::vector<Problem> out;
  int64_t misses = 0;
  while (static_cast<int64_t>(out.size()) < count) {
    Problem p = make();
    if (excluded.count(p.key)) {
      PRISM_CHECK(++misses < 20000, "tasks: ", what, ": no problem outside the RL and test sets is left; raise ", knob,
                  " or lower rl_prompts / test_prompts");
      continue;
    }
    misses = 0;
    out.push_back(std::move(p));
  }
  return out;
}

struct DomainData {
  std::vector<Problem> test, rl, mid, general;
};

DomainData generate_domain(const TaskConfig& cfg, const std::string& domain, const std::vector<Creature>& creatures) {
  const auto seed = static_cast<uint64_t>(cfg.seed);
  DomainData d;
  std::set<std::string> held;  // test and RL keys
  if (domain == "science") {
    // The facts are few and enumerable: split them exactly instead of sampling with misses.
    std::vector<std::pair<size_t, size_t>> facts;
    for (size_t c = 0; c < creatures.size(); ++c)
      for (size_t a = 0; a < kAttributes.size(); ++a) facts.emplace_back(c, a);
    Rng order(seed, "science/split");
    order.shuffle(facts);
    Rng render(seed, "science/render");
    const auto n_test = static_cast<size_t>(cfg.test_prompts), n_rl = static_cast<size_t>(cfg.rl_prompts);
    for (size_t i = 0; i < n_test + n_rl; ++i) {
      Problem p = make_science(render, creatures[facts[i].first], facts[i].second, cfg.science.choices);
      (i < n_test ? d.test : d.rl).push_back(std::move(p));
    }
    const std::vector<std::pair<size_t, size_t>> rest(facts.begin() + static_cast<std::ptrdiff_t>(n_test + n_rl),
                                                      facts.end());
    Rng mid(seed, "science/mid");
    auto draw_mid = [&](int64_t n) {
      std::vector<Problem> out;
      for (int64_t i = 0; i < n; ++i) {
        const auto& f = mid.pick(rest);
        out.push_back(make_science(mid, creatures[f.first], f.second, cfg.science.choices));
      }
      return out;
    };
    d.mid = draw_mid(cfg.mid_docs);
    d.general = draw_mid(cfg.general_worked);
    return d;
  }
  Rng rng(seed, domain + "/problems");
  std::function<Problem()> make;
  std::string knob;
  if (domain == "math") {
    make = [&] { return make_math(rng, cfg.math); };
    knob = "tasks.math.max_operand or tasks.math.max_steps";
  } else {
    make = [&] { return make_code(rng, cfg.code); };
    knob = "tasks.code.max_value or tasks.code.list_len";
  }
  d.test = draw_unique(make, cfg.test_prompts, held, domain + " test_prompts", knob);
  d.rl = draw_unique(make, cfg.rl_prompts, held, domain + " rl_prompts", knob);
  d.mid = draw_outside(make, cfg.mid_docs, held, domain + " mid_docs", knob);
  d.general = draw_outside(make, cfg.general_worked, held, domain + " general_worked", knob);
  return d;
}

std::string text_line(const std::string& text) {
  nlohmann::ordered_json j;
  j["text"] = text;
  return j.dump() + "\n";
}

std::string records(const std::vector<Problem>& ps, const std::string& domain, const std::string& split) {
  std::string out;
  for (size_t i = 0; i < ps.size(); ++i) {
    nlohmann::ordered_json j;
    j["id"] = domain + "-" + split + "-" + std::to_string(i);
    j["domain"] = domain;
    j["prompt"] = prompt_of(ps[i]);
    j["answer"] = ps[i].answer;
    j["solution"] = ps[i].solution;
    for (const auto& [k, v] : ps[i].extra.items()) j[k] = v;
    out += j.dump() + "\n";
  }
  return out;
}

}  // namespace

void TaskConfig::validate() const {
  for (size_t i = 0; i < domains.size(); ++i)
    for (size_t j = 0; j < i; ++j) PRISM_CHECK(domains[i] != domains[j], "domains: '", domains[i], "' is listed twice");
  if (std::find(domains.begin(), domains.end(), "science") != domains.end()) {
    const int64_t facts = 4 * science.creatures;
    PRISM_CHECK(test_prompts + rl_prompts < facts, "science.creatures: ", science.creatures, " creatures give ", facts,
                " facts, fewer than test_prompts + rl_prompts + 1 = ", test_prompts + rl_prompts + 1,
                " (the mid-training documents need facts of their own)");
  }
}

TaskFiles write_tasks(const TaskConfig& cfg, const std::string& out_dir) {
  config::validate_config(cfg);
  const auto seed = static_cast<uint64_t>(cfg.seed);
  // Creatures exist (and are described in the general text) even without the science domain, so
  // the general text of a seed does not depend on which domains are enabled.
  const auto creatures = make_creatures(seed, cfg.science.creatures);

  TaskFiles files;
  std::vector<std::string> general;
  for (const auto& c : creatures)
    for (int64_t r = 0; r < cfg.science.fact_repeats; ++r)
      general.push_back(fact_document(c, r + static_cast<int64_t>(c.name.size())));
  Rng stories(seed, "general/stories");
  for (int64_t i = 0; i < cfg.general_stories; ++i) general.push_back(story(stories));
  std::set<std::string> names;
  for (const auto& c : creatures) names.insert(c.name);
  Rng notes(seed, "general/notes");
  for (int64_t i = 0; i < cfg.general_notes; ++i) general.push_back(copy_note(notes, names));

  std::vector<std::pair<std::string, std::string>> outputs;  // relative path -> content
  for (const auto& domain : cfg.domains) {
    DomainData d = generate_domain(cfg, domain, creatures);
    for (const auto& p : d.general) general.push_back(document_of(p));
    std::string mid, mid_heldout;
    for (const auto& p : d.mid) mid += text_line(document_of(p));
    // Held-out loss of a domain is measured on the test problems' worked solutions: never trained on.
    for (const auto& p : d.test) mid_heldout += text_line(document_of(p));
    files.domains.push_back(domain);
    files.mid_train.push_back(fs::join(out_dir, "mid/" + domain + ".jsonl"));
    files.mid_heldout.push_back(fs::join(out_dir, "mid/" + domain + ".heldout.jsonl"));
    files.rl_prompts.push_back(fs::join(out_dir, "rl/" + domain + ".jsonl"));
    files.test_prompts.push_back(fs::join(out_dir, "test/" + domain + ".jsonl"));
    outputs.emplace_back(files.mid_train.back(), mid);
    outputs.emplace_back(files.mid_heldout.back(), mid_heldout);
    outputs.emplace_back(files.rl_prompts.back(), records(d.rl, domain, "rl"));
    outputs.emplace_back(files.test_prompts.back(), records(d.test, domain, "test"));
  }
  Rng order(seed, "general/order");
  order.shuffle(general);
  std::string general_text;
  for (const auto& doc : general) general_text += text_line(doc);

  // Held-out general text: new stories and fact paragraphs in the training text's wordings (with
  // fact_repeats < 3, a wording this creature's training paragraphs did not use).
  Rng held(seed, "general/heldout");
  std::string heldout_text;
  for (int64_t i = 0; i < cfg.heldout_docs; ++i) {
    if (i % 2 == 0 || creatures.empty()) {
      heldout_text += text_line(story(held));
    } else {
      const auto& c = held.pick(creatures);
      heldout_text += text_line(fact_document(c, static_cast<int64_t>(c.name.size()) + cfg.science.fact_repeats));
    }
  }
  files.general_train = fs::join(out_dir, "general/train.jsonl");
  files.general_heldout = fs::join(out_dir, "general/heldout.jsonl");
  outputs.emplace_back(files.general_train, general_text);
  outputs.emplace_back(files.general_heldout, heldout_text);

  for (const auto& [path, content] : outputs) {
    fs::create_directories(fs::parent(path));
    fs::write_file_atomic(path, content);
  }
  return files;
}

}  // namespace prism::study
