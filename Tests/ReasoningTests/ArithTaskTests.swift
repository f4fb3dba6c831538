import Formats
import TestSupport
import Tensors
import XCTest
@testable import Reasoning

final class ArithTaskTests: XCTestCase {
    private let task = ArithTask.default

    func testTheSameSeedGivesTheSameProblemsAndAnotherSeedOthers() throws {
        let a = try task.problems(split: .train, count: 50, seed: 7)
        let b = try task.problems(split: .train, count: 50, seed: 7)
        let c = try task.problems(split: .train, count: 50, seed: 8)
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.count, 50)
        XCTAssertLessThan(Set(a.map(\.prompt)).intersection(c.map(\.prompt)).count, 5)
        XCTAssertEqual(Set(a.map(\.id)).count, 50)
        let validation = try task.problems(split: .validation, count: 300, seed: 7)
        XCTAssertEqual(Set(validation.map(\.prompt)).count, 300, "scored prompts are distinct")
    }

    func testSplitsAreDisjointWhateverTheSeeds() throws {
        let train = try task.problems(split: .train, count: 4000, seed: 0)
        let validation = try task.problems(split: .validation, count: 300, seed: 0)
        let test = try task.problems(split: .test, count: 300, seed: 0)
        let testPrompts = Set(test.map(\.prompt))
        XCTAssertTrue(testPrompts.isDisjoint(with: train.map(\.prompt)))
        XCTAssertTrue(testPrompts.isDisjoint(with: validation.map(\.prompt)))
        XCTAssertTrue(Set(validation.map(\.prompt)).isDisjoint(with: train.map(\.prompt)))
        // Every problem is owned by the split that returned it.
        XCTAssertTrue(test.allSatisfy { ArithTask.split(ofPrompt: $0.prompt) == .test })
        XCTAssertTrue(train.allSatisfy { ArithTask.split(ofPrompt: $0.prompt) == .train })
    }

    func testEveryAnswerIsWhatItsStepsComputeAndEveryStepUsesThePreviousResult() throws {
        let levels = [ArithLevel(minSteps: 1, maxSteps: 1),
                      ArithLevel(minSteps: 2, maxSteps: 5, maxOperand: 20, maxValue: 200, maxMultiplier: 4,
                                 operations: ArithOperation.allCases)]
        let problems = try ArithTask(levels: levels).problems(split: .validation, count: 400, seed: 3)
        for p in problems {
            let replay = try XCTUnwrap(ArithTask.replay(p.completion), "\(p.completion) does not replay")
            XCTAssertEqual(replay.lastValue, replay.answer, p.completion)
            XCTAssertEqual(String(replay.answer), p.answer)
            XCTAssertTrue(p.completion.hasSuffix("#### \(p.answer)"))
            // The first step starts from the question's first number.
            let first = try XCTUnwrap(Self.numbers(in: p.prompt).first)
            XCTAssertTrue(p.completion.hasPrefix("\(first)"), p.completion)
        }
        // The generator produces every level's step counts.
        let counts = Set(problems.compactMap { ArithTask.replay($0.completion)?.steps })
        XCTAssertEqual(counts, [1, 2, 3, 4, 5])
    }

    func testEitherOrderWritesBothOrdersOfAnAddition() throws {
        var level = ArithTask.defaultLevel
        level.eitherOrder = true
        let problems = try ArithTask(levels: [level]).problems(split: .validation, count: 200, seed: 5)
        var swapped = 0, kept = 0
        for p in problems {
            let replay = try XCTUnwrap(ArithTask.replay(p.completion), p.completion)
            XCTAssertEqual(String(replay.answer), p.answer)
            var previous = Self.numbers(in: p.prompt)[0]
            for line in p.completion.split(separator: "\n").dropLast() {
                let result = Int(line.split(separator: "=")[1])!
                if line.contains("+") { if line.hasPrefix("\(previous)+") { kept += 1 } else { swapped += 1 } }
                previous = result
            }
        }
        XCTAssertGreaterThan(swapped, 100)
        XCTAssertGreaterThan(kept, 100)
        let decoded = try JSONDecoder().decode(ArithLevel.self, from: Data(#"{"min_steps": 1, "max_steps": 2, "max_operand": 9, "max_value": 99, "max_multiplier": 3, "operations": ["+"], "either_order": true}"#.utf8))
        XCTAssertEqual(decoded.eitherOrder, true)
    }

    func testReplayRejectsAWrongStepOrABrokenChain() {
        XCTAssertNotNil(ArithTask.replay("7+5=12\n12-3=9\n#### 9"))
        XCTAssertNil(ArithTask.replay("7+5=13\n13-3=10\n#### 10"), "7+5 is not 13")
        XCTAssertNil(ArithTask.replay("7+5=12\n11-3=8\n#### 8"), "the second step must start from 12")
        XCTAssertNil(ArithTask.replay("7+5=12\n12-3=9"), "no answer line")
        XCTAssertNotNil(ArithTask.replay("7+5=12\n3+12=15\n#### 15"), "+ may take the previous result second")
        XCTAssertNil(ArithTask.replay("7+5=12\n15-12=3\n#### 3"), "- may not")
    }

    /// Chain of thought is needed: the answer is never a number written in the question, and
    /// with two steps or more it is neither the first nor the last operation applied to the
    /// question's numbers alone.
    func testTheAnswerCannotBeReadOffTheQuestion() throws {
        let problems = try task.problems(split: .test, count: 500, seed: 1)
        for p in problems {
            let numbers = Self.numbers(in: p.prompt)
            XCTAssertFalse(numbers.contains(Int(p.answer)!), p.prompt)
            XCTAssertGreaterThanOrEqual(numbers.count, 3, "two steps at least: \(p.prompt)")
        }
        // Answers spread over many values: the best constant guess (11, as answers that are
        // not among the question's digits cluster just above 10) scores about 12%.
        let answers = Dictionary(grouping: problems, by: \.answer).mapValues(\.count)
        XCTAssertLessThan(answers.values.max()!, problems.count / 5)
        XCTAssertGreaterThan(answers.count, 25)
    }

    func testLevelsAreValidated() {
        XCTAssertThrowsError(try ArithTask(levels: [ArithLevel(minSteps: 0, maxSteps: 2)]).problems(split: .train, count: 1, seed: 0)) {
            XCTAssertTrue("\($0)".contains("min_steps"), "\($0)")
        }
        // A split too small for the count is an error, not an endless loop.
        let tiny = ArithLevel(minSteps: 1, maxSteps: 1, maxOperand: 2, maxValue: 4)
        XCTAssertThrowsError(try ArithTask(levels: [tiny]).problems(split: .test, count: 500, seed: 0))
    }

    func testTheTaskTokenizerRoundTripsTaskTextAndSpellsDigitsOneByOne() throws {
        let dir = try makeScratchDirectory("arith-tokenizer")
        let trained = try ArithTask.trainTokenizer()
        XCTAssertEqual(trained, try ArithTask.trainTokenizer(), "training is deterministic")
        let tokenizer = try trained.write(to: dir)
        // Loaded back the way checkpoints load it (tokenizer_config.json names EOS and pad).
        let reloaded = try BPETokenizer(tokenizerJSON: dir.appendingPathComponent("tokenizer.json"))
        XCTAssertEqual(reloaded.vocabularyFingerprint, tokenizer.vocabularyFingerprint)
        XCTAssertEqual(tokenizer.eosTokenId, trained.endOfTextId)
        XCTAssertEqual(tokenizer.token(of: trained.paddingId), "<|pad|>")
        XCTAssertLessThan(tokenizer.vocabSize, 512, "a small vocabulary")

        let digitIds = Set((0...9).map { tokenizer.encode(String($0)) }.map { $0.count == 1 ? $0[0] : -1 })
        XCTAssertEqual(digitIds.count, 10)
        XCTAssertFalse(digitIds.contains(-1))
        let problems = try ArithTask(levels: [ArithLevel(minSteps: 1, maxSteps: 4, maxOperand: 30, maxValue: 500,
                                                         operations: ArithOperation.allCases)])
            .problems(split: .test, count: 200, seed: 5)
        var tokensPerProblem = 0
        for p in problems {
            let text = p.prompt + p.completion
            let ids = tokenizer.encode(text)
            XCTAssertEqual(tokenizer.decode(ids), text)
            tokensPerProblem += ids.count
            // Every digit of the text is one token, and no token mixes a digit with anything.
            XCTAssertEqual(ids.filter(digitIds.contains).count, text.filter(\.isNumber).count)
            for id in ids where !digitIds.contains(id) {
                XCTAssertFalse(tokenizer.decode([id]).contains(where: \.isNumber), tokenizer.decode([id]))
            }
        }
        // Words are merged: far fewer tokens than bytes.
        let bytes = problems.map { ($0.prompt + $0.completion).utf8.count }.reduce(0, +)
        XCTAssertLessThan(Double(tokensPerProblem), 0.5 * Double(bytes))
        // Text outside the task still encodes, byte by byte.
        XCTAssertEqual(tokenizer.decode(tokenizer.encode("Zoë's 3½ €")), "Zoë's 3½ €")
        XCTAssertEqual(tokenizer.encode("<|endoftext|>"), [trained.endOfTextId])
    }

    private static func numbers(in text: String) -> [Int] {
        text.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
    }
}
