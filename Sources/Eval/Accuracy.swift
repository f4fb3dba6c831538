import Foundation
import Formats
import Model
import Reasoning
import Tensors

/// How problems are answered: sampled (the paper's setting: temperature 0.6, top-p 0.95, seeds
/// 42, 43, 44, accuracy averaged over the seeds) or greedy (temperature 0, one pass).
package struct AccuracySettings: Codable, Sendable, Equatable {
    package var seeds: [UInt64]
    /// 0 means greedy (argmax); the seeds are then irrelevant and one pass is made.
    package var temperature: Float
    package var topP: Float
    package var maxTokens: Int
    /// Sequences generated at once (continuous batching: a finished one makes room for the next).
    package var batch: Int
    /// The jobs are cut into this many contiguous shares, each generated on its own with `batch`
    /// slots; under mpirun every rank takes one. Results depend on the shares and the batch
    /// (batched kernels round differently), so one process with `shares = N` reproduces N ranks.
    package var shares: Int

    package init(seeds: [UInt64] = [42, 43, 44], temperature: Float = 0.6, topP: Float = 0.95,
                 maxTokens: Int = 512, batch: Int = 32, shares: Int = 1) {
        self.seeds = seeds
        self.temperature = temperature
        self.topP = topP
        self.maxTokens = maxTokens
        self.batch = batch
        self.shares = shares
    }

    package var greedy: Bool { temperature <= 0 }

    /// The seeds actually run: one pass (seed 0) when greedy.
    package var runSeeds: [UInt64] { greedy ? [0] : seeds }
}

/// One answered problem: a line of `rqat eval --out FILE.jsonl`.
package struct ProblemOutcome: Codable, Sendable, Equatable {
    package var id: String
    package var seed: UInt64
    package var prompt: String
    package var completion: String
    package var gold: String
    package var strictAnswer: String?
    package var strictCorrect: Bool
    package var flexibleAnswer: String?
    package var flexibleRule: AnswerRule?
    package var flexibleCorrect: Bool
    package var finish: GenerationResult.Finish
    /// Tokens generated, the stop token included.
    package var tokens: Int

    package init(id: String, seed: UInt64, prompt: String, completion: String, gold: String, strictAnswer: String?,
                 strictCorrect: Bool, flexibleAnswer: String?, flexibleRule: AnswerRule?, flexibleCorrect: Bool,
                 finish: GenerationResult.Finish, tokens: Int) {
        self.id = id
        self.seed = seed
        self.prompt = prompt
        self.completion = completion
        self.gold = gold
        self.strictAnswer = strictAnswer
        self.strictCorrect = strictCorrect
        self.flexibleAnswer = flexibleAnswer
        self.flexibleRule = flexibleRule
        self.flexibleCorrect = flexibleCorrect
        self.finish = finish
        self.tokens = tokens
    }

    enum CodingKeys: String, CodingKey {
        case id, seed, prompt, completion, gold, finish, tokens
        case strictAnswer = "strict_answer", strictCorrect = "strict_correct"
        case flexibleAnswer = "flexible_answer", flexibleRule = "flexible_rule", flexibleCorrect = "flexible_correct"
    }
}

/// Accuracy under one verdict: the mean over problems and seeds, a 95% bootstrap interval over
/// problems, and the spread of the per-seed accuracies.
package struct AccuracyFigure: Codable, Sendable, Equatable {
    package var mean: Double
    package var low: Double
    package var high: Double
    package var seedMin: Double
    package var seedMax: Double
    package var perSeed: [Double]

    package init(mean: Double, low: Double, high: Double, seedMin: Double, seedMax: Double, perSeed: [Double]) {
        self.mean = mean
        self.low = low
        self.high = high
        self.seedMin = seedMin
        self.seedMax = seedMax
        self.perSeed = perSeed
    }

    enum CodingKeys: String, CodingKey {
        case mean, low, high
        case seedMin = "seed_min", seedMax = "seed_max", perSeed = "per_seed"
    }
}

/// What `rqat eval` prints and the pipeline's report reads.
package struct AccuracySummary: Codable, Sendable, Equatable {
    package var model: String
    package var task: String
    package var split: String
    package var problems: Int
    package var settings: AccuracySettings
    package var strict: AccuracyFigure
    package var flexible: AccuracyFigure
    package var generatedTokens: Int
    /// Completions cut by `maxTokens` instead of ending on their own.
    package var truncated: Int
    package var seconds: Double
    package var tokensPerSecond: Double

    package init(model: String, task: String, split: String, problems: Int, settings: AccuracySettings, strict: AccuracyFigure,
                 flexible: AccuracyFigure, generatedTokens: Int, truncated: Int, seconds: Double, tokensPerSecond: Double) {
        self.model = model
        self.task = task
        self.split = split
        self.problems = problems
        self.settings = settings
        self.strict = strict
        self.flexible = flexible
        self.generatedTokens = generatedTokens
        self.truncated = truncated
        self.seconds = seconds
        self.tokensPerSecond = tokensPerSecond
    }

    enum CodingKeys: String, CodingKey {
        case model, task, split, problems, settings, strict, flexible, truncated, seconds
        case generatedTokens = "generated_tokens", tokensPerSecond = "tokens_per_s"
    }
}

/// What generation needs of a model: its decoder, how prompts become tokens and tokens text.
package struct PromptedModel {
    package let decoder: Decoder
    package let tokenizer: BPETokenizer
    package let chatTemplate: ChatTemplate
    package let stopTokens: Set<Int>
    /// Prompts as a user turn of the chat template (as `sft --format chat` trains), or plain text.
    package let chat: Bool

    package init(decoder: Decoder, tokenizer: BPETokenizer, chatTemplate: ChatTemplate, stopTokens: Set<Int>, chat: Bool) {
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
        self.stopTokens = stopTokens
        self.chat = chat
    }

    /// `chat` nil: chat when the tokenizer has ChatML's end-of-turn token, else plain.
    package init(_ lm: LanguageModel, chat: Bool? = nil) {
        self.init(decoder: lm.decoder, tokenizer: lm.tokenizer, chatTemplate: lm.chatTemplate, stopTokens: lm.stopTokens,
                  chat: chat ?? (lm.tokenizer.id(of: "<|im_end|>") != nil))
    }

    package func encode(prompt: String) -> [Int] { tokenizer.encode(chatTemplate.prompt(prompt, chat: chat)) }

    package func completionText(_ tokens: [Int]) -> String {
        tokenizer.decode(tokens.filter { !stopTokens.contains($0) })
    }
}

/// Accuracy of a model on a list of problems: generation, answer checking, statistics.
///
/// The jobs are every (seed, problem) pair, seed-major. Each job samples with a seed derived
/// from the problem's id and the seed alone, so a problem's draws do not depend on which other
/// problems run beside it, on the batch size or on the rank that runs it.
package enum AccuracyEval {
    package struct Job: Sendable, Equatable {
        package var problem: Int
        package var seed: UInt64
    }

    package static func jobs(problems: Int, settings: AccuracySettings) -> [Job] {
        settings.runSeeds.flatMap { seed in (0..<problems).map { Job(problem: $0, seed: seed) } }
    }

    /// Contiguous share `index` of `count` (the last ones one job shorter when uneven).
    package static func share<T>(_ items: [T], index: Int, of count: Int) -> ArraySlice<T> {
        items[items.count * index / count..<items.count * (index + 1) / count]
    }

    /// A seed for the sampler from the problem's id and the run's seed (FNV-1a, then SplitMix64).
    package static func samplingSeed(problemID: String, seed: UInt64) -> UInt64 {
        StableHash.mix64(StableHash.fnv1a(problemID) ^ (seed &* StableHash.golden))
    }

    /// Generates and checks the jobs of one share; `progress(done, tokens)` after each job.
    package static func outcomes(problems: [Problem], jobs: ArraySlice<Job>, settings: AccuracySettings,
                                 model: PromptedModel, progress: ((Int, Int) -> Void)? = nil) -> [ProblemOutcome] {
        let jobs = Array(jobs)
        let prompts = problems.map { model.encode(prompt: $0.prompt) }
        let requests = jobs.map { job in
            GenerationRequest(prompt: prompts[job.problem], maxNewTokens: settings.maxTokens,
                              sampling: SamplingParams(temperature: settings.temperature,
                                                       topP: settings.greedy ? 1 : settings.topP,
                                                       seed: samplingSeed(problemID: problems[job.problem].id, seed: job.seed)))
        }
        var done = 0, tokens = 0
        let results = Generator(decoder: model.decoder, stopTokens: model.stopTokens)
            .generate(requests, maxBatch: settings.batch, onFinish: { _, result in
                done += 1
                tokens += result.tokens.count
                progress?(done, tokens)
            })
        return zip(jobs, results).map { job, result in
            let problem = problems[job.problem]
            let completion = model.completionText(result.tokens)
            let verdict = AnswerChecker.check(completion: completion, gold: problem.answer)
            return ProblemOutcome(id: problem.id, seed: job.seed, prompt: problem.prompt, completion: completion,
                                  gold: problem.answer, strictAnswer: verdict.strictAnswer, strictCorrect: verdict.strictCorrect,
                                  flexibleAnswer: verdict.flexibleAnswer, flexibleRule: verdict.flexibleRule,
                                  flexibleCorrect: verdict.flexibleCorrect, finish: result.finish, tokens: result.tokens.count)
        }
    }

    /// Every share in this process, one after another (what N ranks do side by side).
    package static func run(problems: [Problem], settings: AccuracySettings, model: PromptedModel,
                            progress: ((Int, Int) -> Void)? = nil) -> [ProblemOutcome] {
        let all = jobs(problems: problems.count, settings: settings)
        var outcomes: [ProblemOutcome] = []
        var doneBefore = 0, tokensBefore = 0
        for s in 0..<max(1, settings.shares) {
            let part = share(all, index: s, of: max(1, settings.shares))
            outcomes += Self.outcomes(problems: problems, jobs: part, settings: settings, model: model) { done, tokens in
                progress?(doneBefore + done, tokensBefore + tokens)
            }
            doneBefore = outcomes.count
            tokensBefore = outcomes.reduce(0) { $0 + $1.tokens }
        }
        return outcomes
    }

    /// Per-problem scores (mean correctness over seeds) in problem order, for paired comparisons.
    package static func perProblem(_ outcomes: [ProblemOutcome], strict: Bool) -> [String: Double] {
        var sums: [String: (Double, Int)] = [:]
        for o in outcomes {
            let (s, n) = sums[o.id] ?? (0, 0)
            sums[o.id] = (s + ((strict ? o.strictCorrect : o.flexibleCorrect) ? 1 : 0), n + 1)
        }
        return sums.mapValues { $0.0 / Double($0.1) }
    }

    /// Agreement with a reference model (the teacher): the share of (problem, seed) pairs at
    /// which the reference reached a final answer (flexible extraction) and `outcomes` reached the
    /// same one, right or wrong. Nil when no pair has a reference answer.
    package static func agreement(_ outcomes: [ProblemOutcome], with reference: [ProblemOutcome]) -> Double? {
        struct Key: Hashable { let id: String; let seed: UInt64 }
        var answers: [Key: String] = [:]
        for r in reference { if let a = r.flexibleAnswer { answers[Key(id: r.id, seed: r.seed)] = a } }
        var pairs = 0, agree = 0
        for o in outcomes {
            guard let reference = answers[Key(id: o.id, seed: o.seed)] else { continue }
            pairs += 1
            if let mine = o.flexibleAnswer, AnswerChecker.matches(mine, gold: reference) { agree += 1 }
        }
        return pairs > 0 ? Double(agree) / Double(pairs) : nil
    }

    package static func summarize(_ outcomes: [ProblemOutcome], problems: [Problem], settings: AccuracySettings,
                                  model: String, task: String, split: String, seconds: Double) -> AccuracySummary {
        func figure(strict: Bool) -> AccuracyFigure {
            let perProblem = Self.perProblem(outcomes, strict: strict)
            let interval = Bootstrap.mean(problems.compactMap { perProblem[$0.id] })
            let perSeed = settings.runSeeds.map { seed -> Double in
                let mine = outcomes.filter { $0.seed == seed }
                return mine.isEmpty ? .nan : Double(mine.filter { strict ? $0.strictCorrect : $0.flexibleCorrect }.count) / Double(mine.count)
            }
            return AccuracyFigure(mean: interval.mean, low: interval.low, high: interval.high,
                                  seedMin: perSeed.min() ?? .nan, seedMax: perSeed.max() ?? .nan, perSeed: perSeed)
        }
        let tokens = outcomes.reduce(0) { $0 + $1.tokens }
        return AccuracySummary(model: model, task: task, split: split, problems: problems.count, settings: settings,
                               strict: figure(strict: true), flexible: figure(strict: false), generatedTokens: tokens,
                               truncated: outcomes.filter { $0.finish == .length }.count, seconds: seconds,
                               tokensPerSecond: seconds > 0 ? Double(tokens) / seconds : 0)
    }
}
