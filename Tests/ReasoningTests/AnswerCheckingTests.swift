import Foundation
import TestSupport
import XCTest
@testable import Reasoning

/// `AnswerChecker` on hand-written completions: each case names what both verdicts must say.
final class AnswerCheckingTests: XCTestCase {
    struct Case {
        let name: String
        let completion: String
        let gold: String
        let strict: String?
        let strictCorrect: Bool
        let flexible: String?
        let rule: AnswerRule?
        let flexibleCorrect: Bool
    }

    static func c(_ name: String, _ completion: String, gold: String,
                  strict: String? = nil, _ strictCorrect: Bool = false,
                  flexible: String?, _ rule: AnswerRule?, _ flexibleCorrect: Bool) -> Case {
        Case(name: name, completion: completion, gold: gold, strict: strict, strictCorrect: strictCorrect,
             flexible: flexible, rule: rule, flexibleCorrect: flexibleCorrect)
    }

    static let cases: [Case] = [
        // GSM8K's own format: both agree.
        c("gsm8k solution", "She has 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18", gold: "18",
          strict: "18", true, flexible: "18", .hashes, true),
        c("hashes wrong", "5 + 5 = 10\n#### 10", gold: "11", strict: "10", false, flexible: "10", .hashes, false),
        c("hashes negative", "The balance is 3 - 10 = -7\n#### -7", gold: "-7", strict: "-7", true, flexible: "-7", .hashes, true),
        c("hashes thousands", "#### 1,234,567", gold: "1234567", strict: "1234567", true, flexible: "1234567", .hashes, true),
        c("hashes trailing dot", "#### 42.", gold: "42", strict: "42", true, flexible: "42", .hashes, true),
        c("hashes .00", "#### 12.00", gold: "12", strict: "12", true, flexible: "12", .hashes, true),
        c("hashes decimal", "#### 0.50", gold: "0.5", strict: "0.5", true, flexible: "0.5", .hashes, true),
        c("first hashes wins in both", "#### 7\nQuestion: next one\n#### 9", gold: "7",
          strict: "7", true, flexible: "7", .hashes, true),
        // Strict fails, flexible succeeds.
        c("hashes with dollar: strict misses", "Total cost: 3 * 4 = 12 dollars.\n#### $12", gold: "12",
          flexible: "12", .hashes, true),
        c("hashes without space: strict misses", "so 6 in all.\n####6", gold: "6", flexible: "6", .hashes, true),
        c("unicode minus: strict misses", "The temperature fell to \u{2212}5 degrees.\n#### \u{2212}5", gold: "-5",
          flexible: "-5", .hashes, true),
        c("answer is", "3 + 4 = 7, so the answer is 7.", gold: "7", flexible: "7", .answerIs, true),
        c("The answer is, capitalised, with dollars", "He pays 2 * 3.50 = 7.\nThe answer is $7.00.", gold: "7",
          flexible: "7", .answerIs, true),
        c("final answer colon", "Step 1: 20 / 4 = 5\nFinal answer: 5", gold: "5", flexible: "5", .answerIs, true),
        c("final answer markdown", "**Final Answer:** 1,200 apples", gold: "1200", flexible: "1200", .answerIs, true),
        c("answer is: after a later number", "The answer is: 8\n(checked with 2 + 6 = 8 and 3 extra)", gold: "8",
          flexible: "8", .answerIs, true),
        c("last answer-is phrase wins", "The answer is 4? No, recount.\nThe answer is 5.", gold: "5",
          flexible: "5", .answerIs, true),
        c("answer-is without number falls through", "I am not sure what the answer is.\nMaybe 12", gold: "12",
          flexible: "12", .lastNumber, true),
        c("ANSWER IS upper case", "THE ANSWER IS 31", gold: "31", flexible: "31", .answerIs, true),
        c("answer is negative unicode", "The answer is \u{2212}12.", gold: "-12", flexible: "-12", .answerIs, true),
        c("answer is fraction", "The answer is 3/4.", gold: "0.75", flexible: "0.75", .answerIs, true),
        // Boxed.
        c("boxed", "So she earns $\\boxed{18}$ dollars.", gold: "18", flexible: "18", .boxed, true),
        c("final answer is boxed", "The final answer is $\\boxed{42}$.", gold: "42", flexible: "42", .boxed, true),
        c("boxed frac", "Half of it: $\\boxed{\\frac{1}{2}}$", gold: "0.5", flexible: "0.5", .boxed, true),
        c("boxed dfrac third", "$\\boxed{\\dfrac{2}{6}}$", gold: "1/3", flexible: "1/3", .boxed, true),
        c("boxed negative frac", "\\boxed{-\\frac{3}{4}}", gold: "-0.75", flexible: "-0.75", .boxed, true),
        c("boxed nested braces", "\\boxed{{1{,}000}}", gold: "1000", flexible: "1000", .boxed, true),
        c("boxed with text unit", "\\boxed{18 \\text{ dollars}}", gold: "18", flexible: "18", .boxed, true),
        c("boxed dollar sign", "\\boxed{\\$1,250.00}", gold: "1250", flexible: "1250", .boxed, true),
        c("boxed equation", "\\boxed{x = 9}", gold: "9", flexible: "9", .boxed, true),
        c("last of several boxed", "First try \\boxed{5}, but that is wrong; it is \\boxed{6}.", gold: "6",
          flexible: "6", .boxed, true),
        c("boxed beats hashes, strict still reads hashes", "#### 10\nActually \\boxed{12}", gold: "10",
          strict: "10", true, flexible: "12", .boxed, false),
        c("unclosed boxed ignored", "\\boxed{3} then \\boxed{4", gold: "3", flexible: "3", .boxed, true),
        c("boxed percent", "The discount is \\boxed{25\\%}", gold: "25", flexible: "25", .boxed, true),
        c("boxed text answer", "\\boxed{\\text{Tuesday}}", gold: "Tuesday", flexible: "Tuesday", .boxed, true),
        c("empty boxed falls through", "\\boxed{} so 14 in all", gold: "14", flexible: "14", .lastNumber, true),
        // Last number (lm-eval flexible-extract).
        c("last number", "She buys 3 packs of 4 pens, 12 pens in all", gold: "12", flexible: "12", .lastNumber, true),
        c("last number with dollars and dot", "It costs 2 + 3 = $5.", gold: "5", flexible: "5", .lastNumber, true),
        c("last number negative", "The change is 4 - 9 = -5", gold: "-5", flexible: "-5", .lastNumber, true),
        c("last number unicode minus", "The change is 4 \u{2212} 9 = \u{2212}5", gold: "-5", flexible: "-5", .lastNumber, true),
        c("last number thousands", "So the total is 2,500", gold: "2500", flexible: "2500", .lastNumber, true),
        c("last number skips punctuation runs", "The result is 8 (i.e., eight)...", gold: "8", flexible: "8", .lastNumber, true),
        c("last number is wrong", "9 + 3 = 12 and then 2 more", gold: "12", flexible: "2", .lastNumber, false),
        c("slash is not a fraction for last-number", "It is 1/2", gold: "0.5", flexible: "2", .lastNumber, false),
        c("number only in the prompt echo", "Question: Tom has 7 apples and eats 2. How many are left?\nLet me think",
          gold: "5", flexible: "2", .lastNumber, false),
        // Nothing at all.
        c("no answer", "I don't know.", gold: "4", flexible: nil, nil, false),
        c("empty completion", "", gold: "4", flexible: nil, nil, false),
        c("hashes without a number", "#### none", gold: "4", flexible: nil, nil, false),
        // Strict succeeds where flexible is fooled by a later box.
        c("strict right, flexible wrong", "#### 3\n\\boxed{4}", gold: "3", strict: "3", true, flexible: "4", .boxed, false),
        // Both wrong but different.
        c("strict and flexible differ", "#### 1,0\nthe answer is 11", gold: "11", strict: "10", false,
          flexible: "10", .hashes, false),
    ]

    func testHandWrittenCases() {
        XCTAssertGreaterThanOrEqual(Self.cases.count, 40)
        XCTAssertEqual(Set(Self.cases.map(\.name)).count, Self.cases.count, "case names are unique")
        let rules = Set(Self.cases.compactMap(\.rule))
        XCTAssertEqual(rules, [.boxed, .hashes, .answerIs, .lastNumber], "every rule is exercised")
        for t in Self.cases {
            let v = AnswerChecker.check(completion: t.completion, gold: t.gold)
            let expected = AnswerVerdict(strictAnswer: t.strict, strictCorrect: t.strictCorrect, flexibleAnswer: t.flexible,
                                         flexibleRule: t.rule, flexibleCorrect: t.flexibleCorrect)
            XCTAssertEqual(v, expected, "\(t.name): \(t.completion.debugDescription)")
        }
    }

    func testNormalize() {
        let cases: [(String, String?)] = [
            ("18", "18"), ("018", "18"), ("-0", "0"), ("+3", "3"), ("1,000", "1000"), ("$1,000.00", "1000"),
            ("\\$5", "5"), ("5.", "5"), ("5.0", "5"), ("5.10", "5.1"), (".5", "0.5"), ("0.50", "0.5"),
            ("\u{2212}7", "-7"), ("- 7", "-7"), ("1/2", "0.5"), ("2/4", "0.5"), ("1 / 3", "1/3"), ("-6/4", "-1.5"),
            ("\\frac{1}{2}", "0.5"), ("\\dfrac{10}{4}", "2.5"), ("\\tfrac{1}{3}", "1/3"), ("-\\frac{2}{3}", "-2/3"),
            ("\\frac{-1}{8}", "-0.125"), ("\\frac{1}{0}", nil), ("50%", "50"), ("50\\%", "50"), ("1\\,000", "1000"),
            ("123456789012345678901234", "123456789012345678901234"), ("abc", nil), ("", nil), ("3 4", nil),
            ("1.2.3", nil), (".", nil), ("$", nil), ("\\text{12}", "12"),
        ]
        for (input, expected) in cases {
            XCTAssertEqual(AnswerChecker.normalize(input), expected, input.debugDescription)
        }
    }

    func testDecimalsAndFractionsCompareAsExactRationals() {
        XCTAssertTrue(AnswerChecker.matches("1/2", gold: "0.5"))
        XCTAssertTrue(AnswerChecker.matches("\\frac{3}{6}", gold: "1/2"))
        XCTAssertTrue(AnswerChecker.matches("1/3", gold: "2/6"))
        XCTAssertFalse(AnswerChecker.matches("0.333", gold: "1/3"), "no rounding: exact comparison")
        XCTAssertFalse(AnswerChecker.matches("0.3333333333", gold: "1/3"))
        XCTAssertTrue(AnswerChecker.matches("12.50", gold: "12.5"))
        XCTAssertFalse(AnswerChecker.matches("12.51", gold: "12.5"))
        XCTAssertTrue(AnswerChecker.matches(" Tuesday ", gold: "Tuesday"), "non-numbers compare as trimmed text")
        XCTAssertFalse(AnswerChecker.matches("tuesday", gold: "Tuesday"))
    }

    func testStrictIsLmEvalsRegexOnTheRawText() {
        XCTAssertEqual(AnswerChecker.strictExtraction("x\n#### 1,000.\nmore"), "1,000.")
        XCTAssertEqual(AnswerChecker.strictExtraction("#### -3 and #### 4"), "-3")
        XCTAssertNil(AnswerChecker.strictExtraction("#### \u{2212}3"))
        XCTAssertNil(AnswerChecker.strictExtraction("### 3"))
    }

    /// The 100 original GSM8K solutions carried by the fetched templates are judged correct by
    /// both verdicts (strict reads their `#### N`), and wrong against another gold answer.
    func testGSM8KReferenceSolutionsAreCorrect() throws {
        try TestPaths.require(TestPaths.gsmTemplates)
        let files = try FileManager.default.contentsOfDirectory(at: TestPaths.gsmTemplates, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "toml" }.sorted { $0.path < $1.path }
        XCTAssertEqual(files.count, 100)
        for file in files {
            let toml = try String(contentsOf: file, encoding: .utf8)
            // The `answer = """..."""` block (the first one; `answer_annotated` comes later).
            guard let start = toml.range(of: "\nanswer = \"\"\"\n"),
                  let end = toml.range(of: "\"\"\"", range: start.upperBound..<toml.endIndex) else {
                XCTFail("\(file.lastPathComponent): no answer block"); continue
            }
            let solution = String(toml[start.upperBound..<end.lowerBound])
            let gold = try XCTUnwrap(solution.components(separatedBy: "#### ").last?.trimmingCharacters(in: .whitespacesAndNewlines))
            let v = AnswerChecker.check(completion: solution, gold: gold)
            XCTAssertTrue(v.strictCorrect && v.flexibleCorrect && v.flexibleRule == .hashes, "\(file.lastPathComponent): \(v)")
            XCTAssertNotNil(AnswerChecker.normalize(gold), "\(file.lastPathComponent): gold \(gold)")
            let wrong = AnswerChecker.check(completion: solution, gold: gold + "1")
            XCTAssertFalse(wrong.strictCorrect || wrong.flexibleCorrect, "\(file.lastPathComponent)")
        }
    }

    func testVerdictRecordUsesTheDocumentedKeys() throws {
        let v = AnswerChecker.check(completion: "the answer is 3", gold: "3")
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(v)) as! [String: Any]
        XCTAssertEqual(json["flexibleRule"] as? String, "answer-is")
        XCTAssertEqual(try JSONDecoder().decode(AnswerVerdict.self, from: JSONEncoder().encode(v)), v)
    }
}
