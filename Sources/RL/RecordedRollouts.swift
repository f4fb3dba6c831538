import Foundation
import Model
import Train

/// One rollout batch as `--record-rollouts` keeps it: a line of the recording (JSON lines).
package struct RecordedBatch: Codable, Sendable, Equatable {
    /// The sampler's seed of each request, which identifies it (problem, epoch, sample).
    package var seeds: [UInt64]
    package var versions: [Int]
    package var tokens: [[Int]]
    package var logprobs: [[Float]]
    package var finish: [GenerationResult.Finish]

    init(requests: [GenerationRequest], sampled: [SampledCompletion]) {
        seeds = requests.map(\.sampling.seed)
        versions = sampled.map(\.version)
        tokens = sampled.map(\.result.tokens)
        logprobs = sampled.map(\.result.logprobs)
        finish = sampled.map(\.result.finish)
    }

    var completions: [SampledCompletion] {
        seeds.indices.map {
            SampledCompletion(result: GenerationResult(tokens: tokens[$0], logprobs: logprobs[$0], finish: finish[$0]), version: versions[$0])
        }
    }
}

/// Writes every batch another generator makes to a file, one JSON line per batch as it is
/// collected, so a later run can train on exactly these rollouts (`ReplayedRollouts`).
package final class RecordingRollouts: RolloutGenerator {
    private let inner: RolloutGenerator
    private let url: URL
    private var submitted: [[GenerationRequest]] = []
    private let handle: FileHandle

    /// Starts a new recording at `url` (an existing file is replaced).
    package init(_ inner: RolloutGenerator, to url: URL) throws {
        self.inner = inner
        self.url = url
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data().write(to: url)
            handle = try FileHandle(forWritingTo: url)
        } catch {
            throw TrainError("--record-rollouts \(url.path): cannot write it (\(error.localizedDescription)); choose a writable path")
        }
    }

    deinit { try? handle.close() }

    package func submit(_ requests: [GenerationRequest], version: Int) throws {
        try inner.submit(requests, version: version)
        submitted.append(requests)
    }

    package func collect() throws -> [SampledCompletion] {
        let sampled = try inner.collect()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        var line = try encoder.encode(RecordedBatch(requests: submitted.removeFirst(), sampled: sampled))
        line.append(UInt8(ascii: "\n"))
        try handle.write(contentsOf: line)
        return sampled
    }
}

/// Rollouts read from a recording in place of sampling: batch i of the run gets line i, which
/// must hold the same requests (sampler seeds), so a replay trains on exactly what the recording
/// run trained on, whatever made it (serving ranks or one process).
package final class ReplayedRollouts: RolloutGenerator {
    private let url: URL
    private var batches: [RecordedBatch]
    private var next = 0
    private var queued: [[SampledCompletion]] = []

    package init(from url: URL) throws {
        self.url = url
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            throw TrainError("--replay-rollouts \(url.path): cannot read it; pass a file written by --record-rollouts")
        }
        batches = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            guard let batch = try? JSONDecoder().decode(RecordedBatch.self, from: Data(line.utf8)),
                  Set([batch.versions.count, batch.tokens.count, batch.logprobs.count, batch.finish.count]) == [batch.seeds.count]
            else {
                throw TrainError("--replay-rollouts \(url.path): line \(i + 1) is not a recorded rollout batch (cut short?); record it again with --record-rollouts")
            }
            batches.append(batch)
        }
    }

    package func submit(_ requests: [GenerationRequest], version: Int) throws {
        guard next < batches.count else {
            throw TrainError("--replay-rollouts \(url.path): it holds \(batches.count) batches and the run asks for more; record a run at least as long, or lower --steps")
        }
        let batch = batches[next]
        guard batch.seeds == requests.map(\.sampling.seed) else {
            throw TrainError("--replay-rollouts \(url.path): batch \(next + 1) was recorded for other requests; replay with the recording run's --seed, --prompts, --group-size, task and problems")
        }
        next += 1
        queued.append(batch.completions)
    }

    package func collect() throws -> [SampledCompletion] {
        guard !queued.isEmpty else { throw TrainError("no rollout batch was submitted to collect") }
        return queued.removeFirst()
    }
}
