import Eval
import Foundation
import Model
import Reasoning
import TestSupport
import XCTest

/// `AccuracyEval` on a tiny random model (its answers are nonsense; what is checked is the
/// bookkeeping: jobs, seeds, shares, verdicts, statistics) and `Bootstrap`.
final class AccuracyTests: XCTestCase {
    func tinyModel() throws -> PromptedModel {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-accuracy-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        try TinyModels.writeModel(at: dir, seed: 3)
        return PromptedModel(try LanguageModel(path: dir.path), chat: false)
    }

    let problems = (0..<5).map { i in
        Problem(id: "p\(i)", prompt: "What is \(i) + \(i + 1)?", completion: "#### \(2 * i + 1)", answer: "\(2 * i + 1)")
    }

    func testJobsAreSeedMajorAndSharesCoverThemOnce() {
        let settings = AccuracySettings(seeds: [7, 8], maxTokens: 4, batch: 2, shares: 3)
        let jobs = AccuracyEval.jobs(problems: 5, settings: settings)
        XCTAssertEqual(jobs.map(\.seed), [7, 7, 7, 7, 7, 8, 8, 8, 8, 8])
        XCTAssertEqual(jobs.map(\.problem), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
        let shares = (0..<3).map { Array(AccuracyEval.share(jobs, index: $0, of: 3)) }
        XCTAssertEqual(shares.map(\.count), [3, 3, 4])
        XCTAssertEqual(shares.flatMap { $0 }, jobs)
        XCTAssertEqual(AccuracyEval.jobs(problems: 5, settings: AccuracySettings(seeds: [7, 8], temperature: 0)).count, 5,
                       "greedy makes one pass whatever the seeds")
    }

    /// A problem's sampled answer depends on its id and the seed, not on its neighbours.
    func testSamplingDependsOnlyOnProblemAndSeed() throws {
        let model = try tinyModel()
        let settings = AccuracySettings(seeds: [42, 43], temperature: 1, topP: 0.95, maxTokens: 6, batch: 1)
        let all = AccuracyEval.run(problems: problems, settings: settings, model: model)
        XCTAssertEqual(all.count, 10)
        let some = AccuracyEval.run(problems: [problems[3], problems[1]], settings: settings, model: model)
        for o in some {
            XCTAssertEqual(all.first { $0.id == o.id && $0.seed == o.seed }, o)
        }
        XCTAssertNotEqual(all.filter { $0.seed == 42 }.map(\.completion), all.filter { $0.seed == 43 }.map(\.completion),
                          "different seeds draw different completions")
        XCTAssertEqual(AccuracyEval.run(problems: problems, settings: settings, model: model), all, "reproducible")
    }

    /// Shares run one after another in one process give what N ranks give side by side.
    func testSharesInOneProcessEqualTheirPartsRunAlone() throws {
        let model = try tinyModel()
        var settings = AccuracySettings(seeds: [1], temperature: 0.8, topP: 1, maxTokens: 5, batch: 2, shares: 2)
        let whole = AccuracyEval.run(problems: problems, settings: settings, model: model)
        let jobs = AccuracyEval.jobs(problems: problems.count, settings: settings)
        let parts = (0..<2).flatMap {
            AccuracyEval.outcomes(problems: problems, jobs: AccuracyEval.share(jobs, index: $0, of: 2), settings: settings, model: model)
        }
        XCTAssertEqual(whole, parts)
        settings.shares = 1
        XCTAssertEqual(AccuracyEval.run(problems: problems, settings: settings, model: model).count, whole.count)
    }

    func testSummaryCountsVerdictsPerSeed() {
        func outcome(_ id: String, _ seed: UInt64, strict: Bool, flexible: Bool, finish: GenerationResult.Finish = .eos) -> ProblemOutcome {
            ProblemOutcome(id: id, seed: seed, prompt: "", completion: "", gold: "1", strictAnswer: nil, strictCorrect: strict,
                           flexibleAnswer: nil, flexibleRule: nil, flexibleCorrect: flexible, finish: finish, tokens: 10)
        }
        let problems = ["a", "b"].map { Problem(id: $0, prompt: "", completion: "", answer: "1") }
        let outcomes = [outcome("a", 1, strict: true, flexible: true), outcome("b", 1, strict: false, flexible: true),
                        outcome("a", 2, strict: false, flexible: false, finish: .length), outcome("b", 2, strict: false, flexible: true)]
        let s = AccuracyEval.summarize(outcomes, problems: problems, settings: AccuracySettings(seeds: [1, 2]),
                                       model: "m", task: "t", split: "test", seconds: 2)
        XCTAssertEqual(s.strict.perSeed, [0.5, 0])
        XCTAssertEqual(s.strict.mean, 0.25)
        XCTAssertEqual(s.flexible.perSeed, [1, 0.5])
        XCTAssertEqual(s.flexible.seedMin, 0.5)
        XCTAssertEqual(s.flexible.mean, 0.75)
        XCTAssertEqual(s.truncated, 1)
        XCTAssertEqual(s.generatedTokens, 40)
        XCTAssertEqual(s.tokensPerSecond, 20)
        XCTAssertLessThanOrEqual(s.flexible.low, s.flexible.mean)
        XCTAssertGreaterThanOrEqual(s.flexible.high, s.flexible.mean)
    }

    /// Agreement pairs (problem, seed) with the reference's answer, right or wrong, as numbers.
    func testAgreementCountsSameAnswersAtTheSameSeed() {
        func outcome(_ id: String, _ seed: UInt64, _ answer: String?) -> ProblemOutcome {
            ProblemOutcome(id: id, seed: seed, prompt: "", completion: "", gold: "1", strictAnswer: nil, strictCorrect: false,
                           flexibleAnswer: answer, flexibleRule: nil, flexibleCorrect: answer == "1", finish: .eos, tokens: 1)
        }
        let teacher = [outcome("a", 1, "5"), outcome("b", 1, "1"), outcome("a", 2, "7"), outcome("b", 2, nil)]
        let student = [outcome("a", 1, "5.0"), outcome("b", 1, "2"), outcome("a", 2, "5"), outcome("b", 2, "1")]
        // a/1: same wrong answer (5 = 5.0); b/1: differs; a/2: differs (5 is a's answer at seed 1 only);
        // b/2: the teacher has no answer, so the pair does not count.
        XCTAssertEqual(AccuracyEval.agreement(student, with: teacher) ?? -1, 1.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(AccuracyEval.agreement(teacher, with: teacher) ?? -1, 1)
        XCTAssertNil(AccuracyEval.agreement(student, with: [outcome("a", 1, nil)]))
    }

    func testBootstrapIntervals() {
        // 400 coin flips with half heads: the normal approximation gives 0.5 +- 0.049.
        let coins = (0..<400).map { Double($0 % 2) }
        let i = Bootstrap.mean(coins)
        XCTAssertEqual(i.mean, 0.5)
        XCTAssertEqual(i.low, 0.451, accuracy: 0.01)
        XCTAssertEqual(i.high, 0.549, accuracy: 0.01)
        XCTAssertEqual(Bootstrap.mean(coins, seed: 9).low, i.low, accuracy: 0.01)
        XCTAssertEqual(Bootstrap.mean(coins), i, "seeded")
        // Paired: b is a with 40 of its wrong answers fixed; the difference is 0.1 and significant.
        let b = coins.enumerated().map { $0.offset < 80 ? 1 : $0.element }
        let d = Bootstrap.pairedDifference(b, coins)
        XCTAssertEqual(d.mean, 0.1, accuracy: 1e-12)
        XCTAssertTrue(d.excludesZero)
        XCTAssertFalse(Bootstrap.pairedDifference(coins, coins).excludesZero)
        XCTAssertEqual(Bootstrap.percentile([0, 10], 0.25), 2.5)
    }
}
