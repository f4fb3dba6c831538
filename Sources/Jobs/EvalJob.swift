import Cluster
import Eval
import Foundation
import Formats
import Model
import Reasoning
import Tensors

/// `rqat eval`: a model's accuracy on a task's problems.
///
/// Under mpirun every rank loads the model and the same problems and takes one contiguous share
/// of the (seed, problem) jobs; the outcomes are gathered on every rank and rank 0 writes them.
/// A single process with `settings.shares` equal to the number of ranks forms the same batches
/// and so writes the same file.
package struct EvalJob {
    package var model: String
    package var task: String
    package var split: Split
    /// Problems asked (the whole split when it is finite and smaller).
    package var limit: Int
    /// Which problems are drawn (unlimited tasks) or in which order (finite ones): not the
    /// sampling seeds, which are in `settings`.
    package var dataSeed: UInt64
    package var settings: AccuracySettings
    /// Prompts through the chat template; nil: when the model's tokenizer has ChatML's end of turn.
    package var chat: Bool?
    package var out: URL?
    package var assets: URL

    package init(model: String, task: String, split: Split, limit: Int, dataSeed: UInt64 = 0,
                 settings: AccuracySettings, chat: Bool? = nil, out: URL? = nil, assets: URL) {
        self.model = model
        self.task = task
        self.split = split
        self.limit = limit
        self.dataSeed = dataSeed
        self.settings = settings
        self.chat = chat
        self.out = out
        self.assets = assets
    }

    package struct Outcome: Sendable {
        package var summary: AccuracySummary
        package var outcomes: [ProblemOutcome]
        /// Whether this rank is the one that reports (rank 0).
        package var reports: Bool
    }

    /// Joins the MPI world (a world of one without mpirun) for this job alone. An error on one
    /// rank of several stops them all (the others would wait for its outcomes forever).
    package func run(log: @escaping (String) -> Void) throws -> Outcome {
        let world = try MPI.initialize()
        defer { MPI.finalize() }
        do {
            return try run(world: world, log: log)
        } catch {
            if world.size > 1 { MPI.abort("error: rank \(world.rank): \(error)") }
            throw error
        }
    }

    /// This rank's part in a world that a caller (the pipeline) keeps for several jobs.
    package func run(world: Communicator, log: @escaping (String) -> Void) throws -> Outcome {
        // Refuse an unwritable --out before the (long) generation, not after it.
        if world.rank == 0, let out { try JobJSON.checkWritable(out) }
        let task = try TaskRegistry.task(named: self.task, assets: assets)
        let problems = try task.problems(split: split, count: limit, seed: dataSeed)
        guard !problems.isEmpty else { throw JobError("task \(self.task) has no \(split.rawValue) problems; choose another --split") }
        let lm = try LanguageModel(path: model)
        let prompted = PromptedModel(lm, chat: chat)

        let start = Date()
        var settings = self.settings
        settings.shares = max(settings.shares, world.size)
        let outcomes = try Self.outcomes(problems: problems, model: prompted, modelName: model, settings: settings,
                                         world: world, log: log)
        let seconds = Date().timeIntervalSince(start)
        let summary = AccuracyEval.summarize(outcomes, problems: problems, settings: settings, model: model,
                                             task: self.task, split: split.rawValue, seconds: seconds)
        if world.rank == 0, let out {
            try JobJSON.writeLines(outcomes, to: out)
        }
        return Outcome(summary: summary, outcomes: outcomes, reports: world.rank == 0)
    }

    /// The outcomes of every (seed, problem) job, on every rank: rank r generates shares r,
    /// r + size, ... (one each when `settings.shares` is the world size) and all are gathered.
    /// `modelName` names the model in errors (its path).
    package static func outcomes(problems: [Problem], model: PromptedModel, modelName: String = "the model",
                                 settings: AccuracySettings, world: Communicator,
                                 log: @escaping (String) -> Void) throws -> [ProblemOutcome] {
        try checkPrompts(problems, model: model, maxTokens: settings.maxTokens, path: modelName)
        let shares = max(settings.shares, world.size)
        let jobs = AccuracyEval.jobs(problems: problems.count, settings: settings)
        let start = Date()
        var mine: [ProblemOutcome] = []
        var lastLog = Date()
        let perRank = (jobs.count + world.size - 1) / world.size
        for s in stride(from: world.rank, to: shares, by: world.size) {
            let part = AccuracyEval.share(jobs, index: s, of: shares)
            let before = mine.count
            mine += AccuracyEval.outcomes(problems: problems, jobs: part, settings: settings, model: model) { done, tokens in
                guard world.rank == 0, Date().timeIntervalSince(lastLog) >= 10 else { return }
                lastLog = Date()
                let elapsed = Date().timeIntervalSince(start), finished = before + done
                log(String(format: "eval: %d/%d answers on rank 0, %.1f tokens/s, ETA %@", finished, perRank,
                           Double(tokens) / max(elapsed, 1e-9),
                           formatDuration(elapsed / Double(max(finished, 1)) * Double(max(perRank - finished, 0)))))
            }
        }
        return try gather(mine, world: world, shares: shares)
    }

    /// Every rank's outcomes, back in job order (shares interleave over ranks).
    private static func gather(_ mine: [ProblemOutcome], world: Communicator, shares: Int) throws -> [ProblemOutcome] {
        guard world.size > 1 else { return mine }
        let parts = try world.allGather(Array(try JSONEncoder().encode(mine))).map {
            try JSONDecoder().decode([ProblemOutcome].self, from: Data($0))
        }
        // Rank r holds shares r, r + size, ... in order; lay them out by share index.
        var perShare: [[ProblemOutcome]] = []
        var cursor = Array(repeating: 0, count: world.size)
        let total = parts.reduce(0) { $0 + $1.count }
        for s in 0..<shares {
            let rank = s % world.size
            let count = total * (s + 1) / shares - total * s / shares
            perShare.append(Array(parts[rank][cursor[rank]..<cursor[rank] + count]))
            cursor[rank] += count
        }
        return perShare.flatMap { $0 }
    }

    /// Every prompt must encode to ids the model has embeddings for, and fit its context with
    /// `maxTokens` more.
    package static func checkPrompts(_ problems: [Problem], model: PromptedModel, maxTokens: Int, path: String) throws {
        let config = model.decoder.config
        for p in problems {
            let ids = model.encode(prompt: p.prompt)
            if let bad = ids.first(where: { $0 >= config.vocabSize }) {
                throw JobError("\(path): its tokenizer gives token id \(bad) for problem \(p.id), beyond the model's vocabulary of \(config.vocabSize); use the tokenizer the model was trained with")
            }
            if ids.count + maxTokens > config.maxPositionEmbeddings {
                throw JobError("\(path): problem \(p.id) is \(ids.count) prompt tokens, which with \(maxTokens) new tokens exceeds the model's context of \(config.maxPositionEmbeddings); lower the maximum of new tokens or use a model with a longer context")
            }
        }
    }
}
