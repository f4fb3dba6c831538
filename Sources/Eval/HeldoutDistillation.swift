import Foundation
import Model
import Tensors
import Train

/// How far a student is from its teacher on held-out text: the full-vocabulary forward
/// KL(teacher || student) at temperature T at every completion position of a set of examples,
/// i.e. at the positions a KD run trains on (position t predicts token t+1, counted when token
/// t+1 is a completion token).
///
/// The teacher's logits at those positions are computed once, at construction, and kept
/// (positions x V floats: about 200 KB per position for a 49152-token vocabulary), so several
/// students can be compared against the same teacher without running it again.
package final class HeldoutDistillation {
    package let examples: [SFTExample]
    package let temperature: Float
    package let vocab: Int
    /// Per example, the positions (indices into its tokens) that are evaluated.
    package let positions: [[Int]]
    /// Per example, the teacher's logits at `positions` (count, V).
    private let teacherLogits: [Tensor]

    /// The positions of an example that predict a completion token: promptLength - 1 ..< count - 1.
    package static func completionPositions(_ example: SFTExample) -> [Int] {
        let first = max(example.promptLength - 1, 0)
        return Array(first..<max(example.tokens.count - 1, first))
    }

    /// Runs the teacher over every example (each as its own sequence from position 0).
    package init(teacher: Decoder, examples: [SFTExample], temperature: Float = 1) {
        precondition(temperature > 0, "temperature must be positive")
        self.examples = examples
        self.temperature = temperature
        vocab = teacher.config.vocabSize
        positions = examples.map(Self.completionPositions)
        var logits: [Tensor] = []
        for (e, example) in examples.enumerated() {
            if positions[e].isEmpty { logits.append(Tensor(shape: [1, vocab])); continue }
            // The LM head runs on the evaluated positions only: (count, V).
            let cache = teacher.makeCache(capacities: [example.tokens.count])
            logits.append(teacher.forward([SequenceChunk(sequence: 0, tokens: example.tokens)], cache: cache,
                                          logitRows: positions[e]))
        }
        teacherLogits = logits
    }

    /// Number of evaluated positions.
    package var positionCount: Int { positions.reduce(0) { $0 + $1.count } }

    /// The KL of `student` (its current weights, through its weight quantizer if it has one).
    /// Examples run `rows` at a time, each padded to `seqLen` tokens (default: the longest
    /// example); pass the training shape to reuse the student's activation buffers.
    package func evaluate(student: TrainableDecoder, rows: Int = 1, seqLen: Int? = nil, padId: Int = 0) -> HeldoutKL {
        precondition(student.config.vocabSize == vocab, "student vocabulary \(student.config.vocabSize) differs from the teacher's \(vocab)")
        let length = seqLen ?? max(examples.map(\.tokens.count).max() ?? 1, 1)
        precondition(examples.allSatisfy { $0.tokens.count <= length }, "an example is longer than seqLen \(length)")
        let options = KDLoss.Options(temperature: temperature, scaleByTemperatureSquared: false)
        var sums = [Double](repeating: 0, count: examples.count)
        for first in stride(from: 0, to: examples.count, by: rows) {
            let batch = Array(first..<min(first + rows, examples.count))
            var tokens = [Int](repeating: padId, count: rows * length)
            for (r, e) in batch.enumerated() {
                for (t, token) in examples[e].tokens.enumerated() { tokens[r * length + t] = token }
            }
            let logits = student.forward(tokens: tokens, batch: rows, length: length)
            for (r, e) in batch.enumerated() where !positions[e].isEmpty {
                let n = positions[e].count
                let gathered = logits.gatherRows(positions[e].map { r * length + $0 })
                sums[e] = KDLoss.fullLogits(student: gathered.ptr, vocab: vocab, teacher: teacherLogits[e].ptr,
                                            weights: [Float](repeating: 1, count: n), normalizer: 1,
                                            options: options, gradient: nil)
            }
        }
        return HeldoutKL(sums: sums, counts: positions.map(\.count))
    }
}

/// Held-out KL per example (summed over its positions) and its mean per position.
package struct HeldoutKL: Equatable, Sendable {
    package let sums: [Double]
    package let counts: [Int]

    package init(sums: [Double], counts: [Int]) {
        precondition(sums.count == counts.count, "one sum per count")
        self.sums = sums
        self.counts = counts
    }

    package var positions: Int { counts.reduce(0, +) }
    /// Mean KL per position (nats).
    package var mean: Double { sums.reduce(0, +) / Double(max(positions, 1)) }

    /// mean(self) - mean(other) over the same examples, with its standard error treating
    /// examples (not positions, which are correlated within a sequence) as the independent units.
    package func difference(from other: HeldoutKL) -> (mean: Double, standardError: Double) {
        precondition(counts == other.counts, "held-out KLs of different example sets")
        let n = Double(max(positions, 1))
        let d = zip(sums, other.sums).map { $0 - $1 }
        let mean = d.reduce(0, +) / n
        return (mean, Self.clusteredStandardError(sums: d, counts: counts, mean: mean))
    }

    /// The standard error of the mean per position of a ratio estimator sum(x_e) / sum(n_e)
    /// with examples as clusters.
    package static func clusteredStandardError(sums: [Double], counts: [Int], mean: Double) -> Double {
        let e = sums.count
        guard e > 1 else { return .nan }
        let n = Double(counts.reduce(0, +))
        var ss = 0.0
        for (x, c) in zip(sums, counts) { ss += pow(x - Double(c) * mean, 2) }
        return (ss * Double(e) / Double(e - 1)).squareRoot() / n
    }
}
