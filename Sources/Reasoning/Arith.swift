import Foundation
import Tensors
import Formats

/// One arithmetic operation a word problem step can ask for.
package enum ArithOperation: String, Codable, Sendable, CaseIterable {
    case add = "+", subtract = "-", multiply = "*"

    /// a op b = b op a: the operands may be written in either order.
    package var commutes: Bool { self != .subtract }

    package func apply(_ a: Int, _ b: Int) -> Int {
        switch self {
        case .add: a + b
        case .subtract: a - b
        case .multiply: a * b
        }
    }
}

/// How hard an `arith` problem is: how many steps, how large the numbers, which operations.
///
/// A problem starts from a value in 1...maxOperand and applies `steps` operations, each with an
/// operand in 1...maxOperand (2...maxMultiplier for multiplication), keeping every intermediate
/// value in 0...maxValue (so a small model never meets a number it cannot spell in few digits).
package struct ArithLevel: Codable, Sendable, Equatable {
    package var minSteps: Int
    package var maxSteps: Int
    package var maxOperand: Int
    package var maxValue: Int
    package var maxMultiplier: Int
    package var operations: [ArithOperation]
    /// Solutions write the operands of + and * in either order, drawn 50/50 (`12+5=17` or
    /// `5+12=17`): two equally right continuations, so a teacher trained on them spreads its
    /// probability as a language model does over equivalent phrasings. Off (nil) by default.
    package var eitherOrder: Bool?

    package init(minSteps: Int, maxSteps: Int, maxOperand: Int = 9, maxValue: Int = 99,
                maxMultiplier: Int = 3, operations: [ArithOperation] = [.add, .subtract], eitherOrder: Bool? = nil) {
        self.minSteps = minSteps
        self.maxSteps = maxSteps
        self.maxOperand = maxOperand
        self.maxValue = maxValue
        self.maxMultiplier = maxMultiplier
        self.operations = operations
        self.eitherOrder = eitherOrder
    }

    enum CodingKeys: String, CodingKey {
        case minSteps = "min_steps", maxSteps = "max_steps", maxOperand = "max_operand", maxValue = "max_value"
        case maxMultiplier = "max_multiplier", operations, eitherOrder = "either_order"
    }

    /// Refuses levels no problem can be drawn from (the message names the field).
    package func validate() throws {
        func check(_ ok: Bool, _ why: String) throws { if !ok { throw ArithLevelError(description: "arith level: \(why)") } }
        try check(minSteps >= 1 && maxSteps >= minSteps, "min_steps must be >= 1 and max_steps >= min_steps (got \(minSteps)...\(maxSteps))")
        try check(maxOperand >= 2, "max_operand must be at least 2 (got \(maxOperand))")
        try check(maxValue >= maxOperand * 2, "max_value must be at least twice max_operand (got \(maxValue) for \(maxOperand))")
        try check(!operations.isEmpty, "operations must list at least one of + - *")
        try check(!operations.contains(.multiply) || maxMultiplier >= 2, "max_multiplier must be at least 2 with *")
    }
}

package struct ArithLevelError: UserFacingError {
    package let description: String
}

/// The built-in `arith` task: procedurally generated multi-step word problems with a worked
/// solution, one step per line, ending `#### N`.
///
/// The surface is chosen for a model trained from scratch in minutes: one person and one kind
/// of item per problem, one fixed sentence per operation, single digits (each its own token in
/// the task's tokenizer), and a solution that restates every operation with both operands
/// copied, `7+5=12`, the left one being the previous line's result:
///
///     Ann has 7 apples. Ann gets 5 more. Ann gives away 3. How many apples does Ann have now?
///     7+5=12
///     12-3=9
///     #### 9
///
/// Chain of thought matters: every step after the first reads the previous result, and a
/// problem whose answer equals any number written in its question is redrawn, so the answer
/// cannot be copied from the question. The numbers of a question are distinct (when the level
/// has enough of them), so the operand of step k+1 is "the number written after step k's".
///
/// Splits are disjoint by construction: a problem belongs to the split that a hash of its
/// prompt selects (1/20 test, 1/20 validation, the rest train), and each split keeps only the
/// problems it owns, so no seed can make a test prompt appear in train. The problems of
/// (split, count, seed) are the first `count` of the seed's stream that the split owns; in
/// validation and test they are distinct prompts (no problem counts twice in a score), while
/// train samples with replacement (a one-step level has only a few thousand problems, and a
/// curriculum may ask for more).
package struct ArithTask: ReasoningTask {
    package var name: String { "arith" }
    /// Problems are drawn from these levels in turn (problem i from `levels[i % levels.count]`),
    /// so a list from one step to many is a curriculum mixed into every batch.
    package var levels: [ArithLevel]

    package init(levels: [ArithLevel]) {
        precondition(!levels.isEmpty, "an arith task needs at least one level")
        self.levels = levels
    }

    /// The embedded default's test level (see docs/ACCURACY.md, "The embedded teacher").
    package static let defaultLevel = ArithLevel(minSteps: 2, maxSteps: 4, maxOperand: 9, maxValue: 99)
    package static let `default` = ArithTask(levels: [defaultLevel])

    package func problems(split: Split, count: Int, seed: UInt64) throws -> [Problem] {
        for level in levels { try level.validate() }
        var out: [Problem] = []
        out.reserveCapacity(count)
        var seen = Set<String>()
        var draw: UInt64 = 0
        // A level whose split holds fewer than `count` distinct problems would loop forever;
        // give up after this many fruitless draws in a row.
        let patience = 20_000
        var fruitless = 0
        while out.count < count {
            let level = levels[out.count % levels.count]
            var rng = SeededRNG(seed: Self.streamSeed(seed, draw))
            draw += 1
            let generated = Self.generate(level: level, rng: &rng)
            guard let generated, Self.split(ofPrompt: generated.prompt) == split,
                  split == .train || seen.insert(generated.prompt).inserted else {
                fruitless += 1
                if fruitless >= patience {
                    throw ArithLevelError(description: "arith: the \(split.rawValue) split of level \(level) has fewer than \(count) distinct problems (found \(out.count)); ask for fewer or widen the level")
                }
                continue
            }
            fruitless = 0
            out.append(Problem(id: "arith-\(split.rawValue)-\(seed)-\(out.count)", prompt: generated.prompt,
                               completion: generated.completion, answer: String(generated.answer)))
        }
        return out
    }

    // MARK: - Splits

    /// The split that owns a prompt: FNV-1a of its UTF-8 bytes, modulo 20.
    package static func split(ofPrompt prompt: String) -> Split {
        switch StableHash.fnv1a(prompt) % 20 {
        case 0: return .test
        case 1: return .validation
        default: return .train
        }
    }

    /// The seed of draw `index` of stream `seed` (SplitMix64 of the pair), so each problem is
    /// reproducible on its own.
    private static func streamSeed(_ seed: UInt64, _ index: UInt64) -> UInt64 {
        StableHash.mix64(seed &* StableHash.golden &+ index &+ 0x632B_E59B_D9B4_E019)
    }

    // MARK: - Surface

    /// Short, distinct, one token each in the task's tokenizer once merged.
    package static let names = ["Ann", "Ben", "Cal", "Dan", "Eva", "Fay", "Gus", "Hal", "Ivy", "Jo"]
    package static let items = ["apples", "pens", "cards", "coins", "books", "eggs", "cups", "shells"]

    /// The sentence stating one step, and the question.
    static func sentence(_ op: ArithOperation, operand b: Int, name: String) -> String {
        switch op {
        case .add: "\(name) gets \(b) more."
        case .subtract: "\(name) gives away \(b)."
        case .multiply: "\(name) ends up with \(b) times as many."
        }
    }

    /// Every text the task writes is made of these sentences: a tokenizer trained on them
    /// covers the task.
    package struct Generated: Sendable, Equatable {
        package var prompt: String
        package var completion: String
        package var answer: Int
        /// The values of the question in order: the start, then each step's operand.
        package var questionNumbers: [Int]
    }

    /// One problem of `level`: the step count is drawn first (so step counts stay uniform),
    /// then the numbers are redrawn until they are distinct and the answer is none of them;
    /// nil if 1000 draws find no such problem (a level too narrow for its step count).
    package static func generate(level: ArithLevel, rng: inout SeededRNG) -> Generated? {
        func uniform(_ range: ClosedRange<Int>) -> Int {
            range.lowerBound + Int(rng.next() % UInt64(range.upperBound - range.lowerBound + 1))
        }
        let name = names[uniform(0...names.count - 1)]
        let item = items[uniform(0...items.count - 1)]
        let steps = uniform(level.minSteps...level.maxSteps)
        for _ in 0..<1000 {
            let start = uniform(1...level.maxOperand)
            var value = start
            var sentences = ["\(name) has \(start) \(item)."]
            var lines: [String] = []
            var numbers = [start]
            for _ in 0..<steps {
                // The operations whose result can stay in range from here.
                let possible = level.operations.filter { op in
                    switch op {
                    case .add: value + 1 <= level.maxValue
                    case .subtract: value >= 1
                    case .multiply: value >= 1 && value * 2 <= level.maxValue
                    }
                }
                let op = possible[uniform(0...possible.count - 1)]
                let b: Int
                switch op {
                case .add: b = uniform(1...min(level.maxOperand, level.maxValue - value))
                case .subtract: b = uniform(1...min(level.maxOperand, value))
                case .multiply: b = uniform(2...min(level.maxMultiplier, level.maxValue / value))
                }
                let next = op.apply(value, b)
                sentences.append(sentence(op, operand: b, name: name))
                let swapped = op.commutes && level.eitherOrder == true && rng.next() % 2 == 1
                lines.append(swapped ? "\(b)\(op.rawValue)\(value)=\(next)" : "\(value)\(op.rawValue)\(b)=\(next)")
                numbers.append(b)
                value = next
            }
            // Distinct numbers make each step's operand findable by content: it is the number
            // written after the one the previous step used (an induction-head lookup), which a
            // RoPE model, having no absolute positions, learns far sooner than counting sentences.
            guard Set(numbers).count == numbers.count || level.maxOperand <= steps else { continue }
            guard !numbers.contains(value) else { continue }
            sentences.append("How many \(item) does \(name) have now?")
            lines.append("#### \(value)")
            return Generated(prompt: sentences.joined(separator: " ") + "\n",
                             completion: lines.joined(separator: "\n"), answer: value, questionNumbers: numbers)
        }
        return nil
    }

    /// Text covering the task's surface, for training its tokenizer: every name and item, and
    /// problems of every operation drawn from the train split. Fixed (independent of a task's
    /// levels), so every `arith` model shares one vocabulary.
    package static func tokenizerCorpus(count: Int = 2_000, seed: UInt64 = 0) throws -> [String] {
        let everyOperation = ArithLevel(minSteps: 1, maxSteps: 4, maxOperand: 9, maxValue: 99,
                                        operations: ArithOperation.allCases)
        var texts: [String] = []
        for name in names {
            for item in items { texts.append("\(name) has 3 \(item). How many \(item) does \(name) have now?\n") }
        }
        let problems = try ArithTask(levels: [defaultLevel, everyOperation])
            .problems(split: .train, count: count, seed: seed)
        texts += problems.map { $0.prompt + $0.completion }
        return texts
    }
}

// MARK: - Checking a worked solution

extension ArithTask {
    /// Re-evaluates a completion's steps: each line `a<op>b=c` must have c = a op b and (after the
    /// first) a equal to the previous line's c (or b, for + and *, whose operands may come in
    /// either order); returns the value of the last step and the
    /// `#### N` answer, or nil if a line breaks these rules.
    package static func replay(_ completion: String) -> (lastValue: Int, answer: Int, steps: Int)? {
        var previous: Int? = nil
        var steps = 0
        for line in completion.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("#### ") {
                guard let answer = Int(line.dropFirst(5)), let last = previous else { return nil }
                return (last, answer, steps)
            }
            guard let eq = line.firstIndex(of: "="), let result = Int(line[line.index(after: eq)...]) else { return nil }
            let lhs = line[..<eq]
            guard let opIndex = lhs.dropFirst().firstIndex(where: { "+-*".contains($0) }),
                  let op = ArithOperation(rawValue: String(lhs[opIndex])),
                  let a = Int(lhs[..<opIndex]), let b = Int(lhs[lhs.index(after: opIndex)...]) else { return nil }
            guard op.apply(a, b) == result, previous == nil || previous == a || (op.commutes && previous == b) else { return nil }
            previous = result
            steps += 1
        }
        return nil
    }
}

// MARK: - Tokenizer

extension ArithTask {
    /// The task's own byte-level BPE tokenizer, learnt from its train split (deterministic: the
    /// same corpus and merges every time, whatever the levels). Write it with `result.write(to:)`.
    package static func trainTokenizer(maxMerges: Int = 256) throws -> BPETrainer.Result {
        BPETrainer(maxMerges: maxMerges).train(try tokenizerCorpus())
    }

    /// The task's one fixed vocabulary, whatever the training text.
    package func tokenizerForTraining(texts: () throws -> [String]) throws -> BPETrainer.Result {
        try Self.trainTokenizer()
    }
}
