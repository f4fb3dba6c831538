import Foundation
import Formats
import Model
import Tensors
import TestSupport
import Train
import XCTest

/// The trainer's two seams with toys of what RL puts through them: a batch source whose batches
/// carry per-token advantages and behaviour log-probabilities, and an objective that
/// uses both and makes several optimizer updates per drawn batch.
final class TrainerSeamTests: XCTestCase {
    static let vocab = 40, seqLen = 8

    /// Two rows of random tokens per batch: row 0 with advantage +1, row 1 with -1.
    final class RolloutSource: BatchSource {
        let rowsPerBatch = 2
        private(set) var position = DataPosition()
        private(set) var drawn = 0
        private var rng = SeededRNG(seed: 3)

        func nextBatch() -> SFTBatch {
            drawn += 1
            position.index += rowsPerBatch
            let n = rowsPerBatch * seqLen
            let tokens = (0..<n).map { _ in Int(rng.next() % UInt64(vocab)) }
            var targets = tokens, mask = [Float](repeating: 1, count: n)
            for t in 0..<n {
                let last = t % seqLen == seqLen - 1
                targets[t] = last ? 0 : tokens[t + 1]
                if last { mask[t] = 0 }
            }
            var batch = SFTBatch(rows: rowsPerBatch, seqLen: seqLen, tokens: tokens, targets: targets, lossMask: mask,
                                 documentStarts: [[0], [0]], exampleCount: rowsPerBatch)
            batch.rollout = RolloutTokens(advantages: (0..<n).map { $0 < seqLen ? 1 : -1 },
                                          coefficients: [Float](repeating: 1, count: n),
                                          behaviourLogProbs: (0..<n).map { -Float($0 % 5) })
            return batch
        }
    }

    /// -sum_t w_t log p(y_t) / normalizer: a policy gradient with advantages w. It records, per
    /// call, the batch id, the mean target log-probability of each row and the reference values.
    final class WeightedLikelihood: TrainingObjective {
        var lookahead: Int { 0 }
        var updatesPerBatch: Int { 3 }
        var calls: [(id: Int, rowLogProb: [Double], reference: [Float])] = []

        func prepare(_ batch: SFTBatch, id: Int) {}

        func lossAndGradient(_ batch: SFTBatch, id: Int, logits: Tensor, vocab: Int, normalizer: Double) throws -> Double {
            let rollout = try XCTUnwrap(batch.rollout)
            let weights = rollout.advantages, reference = rollout.behaviourLogProbs
            var loss = 0.0, rowLogProb = [Double](repeating: 0, count: batch.rows)
            for t in 0..<batch.rows * batch.seqLen {
                let row = logits.row(t)
                var top = -Float.infinity
                for j in 0..<vocab { top = max(top, row[j]) }
                var sum: Float = 0
                for j in 0..<vocab { sum += exp(row[j] - top) }
                let logProb = row[batch.targets[t]] - top - log(sum)
                let w = batch.lossMask[t] * weights[t]
                if batch.lossMask[t] > 0 { rowLogProb[t / batch.seqLen] += Double(logProb) / Double(batch.seqLen - 1) }
                loss -= Double(w * logProb) / normalizer
                // d/dlogits of -w log softmax(y) = w (softmax - onehot(y)) / normalizer
                for j in 0..<vocab {
                    let p = exp(row[j] - top) / sum
                    row[j] = w * (p - (j == batch.targets[t] ? 1 : 0)) / Float(normalizer)
                }
            }
            calls.append((id, rowLogProb, reference))
            return loss
        }
    }

    func testObjectiveWithTokenWeightsMakesSeveralUpdatesPerBatch() throws {
        let config = ModelConfig(modelType: .qwen3, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: Self.vocab,
                                 maxPositionEmbeddings: 64, tieWordEmbeddings: true)
        let model = TrainableDecoder(config: config, seed: 5)
        var options = TrainOptions()
        options.steps = 6
        options.batchTokens = 2 * Self.seqLen
        options.seqLen = Self.seqLen
        options.lr = 3e-2
        options.cosine = false
        options.weightDecay = 0
        options.maxGradNorm = nil
        let source = RolloutSource(), objective = WeightedLikelihood()
        let trainer = try Trainer(model: model, batches: { _, _ in source }, options: options,
                                  runDir: try makeScratchDirectory("rqat-seams"), objective: objective)
        try trainer.run()

        XCTAssertEqual(source.drawn, 2, "6 steps at 3 updates per batch draw 2 batches")
        XCTAssertEqual(objective.calls.map(\.id), [0, 0, 0, 1, 1, 1])
        XCTAssertEqual(objective.calls[0].reference, RolloutSource().nextBatch().rollout?.behaviourLogProbs)
        // On each batch, the +1 row's targets become likelier and the -1 row's less likely.
        for first in [0, 3] {
            let before = objective.calls[first].rowLogProb, after = objective.calls[first + 2].rowLogProb
            XCTAssertGreaterThan(after[0], before[0] + 1e-3, "calls \(first)...\(first + 2): \(before) -> \(after)")
            XCTAssertLessThan(after[1], before[1] - 1e-3, "calls \(first)...\(first + 2): \(before) -> \(after)")
        }
        XCTAssertEqual(trainer.step, 6)
    }
}
