import Foundation
import Tensors
import Train

/// GRPO on the trainer's objective seam: the clipped surrogate (`GRPOLoss`) on rollout batches,
/// `updatesPerBatch` optimizer steps per rollout batch.
///
/// The old policy of the ratio is the trained model itself at the first update on a batch: its
/// log-probabilities of the rollout tokens, at the sampling temperature, are the ones that
/// update's loss computes anyway, kept for the later updates. So the first update has ratio 1 exactly
/// and the clip cannot act on it (with one update per batch, GRPO is a plain policy gradient
/// with group-relative advantages). When rollouts come from the same weights (lag 0), the
/// sampler's log-probabilities should equal these; `behaviourGap` measures how far they are
/// (different kernels or batch shapes; with a lag above 0, mostly the updates since sampling).
/// With `--tis-cap` the surrogate is weighted by min(pi_old / pi_sampler, cap) per token.
package final class GRPOObjective: TrainingObjective {
    package let options: GRPOLoss.Options
    package let updatesPerBatch: Int
    package var lookahead: Int { 0 }

    /// Sums over the micro-batches trained since the last `takeStepStats()` on this rank.
    package private(set) var stats = GRPOLoss.Stats()
    /// |sampler log pi - recomputed log pi| of the rollout tokens, over the batches first seen
    /// since the last `takeStepStats()`.
    package private(set) var behaviourGap = BehaviourGap()

    private var oldLogProbs: (id: Int, values: [Float])?

    /// Weight of a KD term on the rollout tokens: forward KL from the teacher's distribution
    /// (the batch's `teacher` top-k) to the policy's at T 1, aggregated with the same
    /// coefficients as the surrogate. 0 = none.
    package let kdCoefficient: Double

    package init(options: GRPOLoss.Options, updatesPerBatch: Int = 1, kdCoefficient: Double = 0) {
        precondition(updatesPerBatch >= 1, "at least one update per rollout batch")
        self.options = options
        self.updatesPerBatch = updatesPerBatch
        self.kdCoefficient = kdCoefficient
    }

    package func prepare(_ batch: SFTBatch, id: Int) {}

    /// The figures of the steps since the last call, and zeroes them.
    package func takeStepStats() -> (loss: GRPOLoss.Stats, behaviourGap: BehaviourGap) {
        defer { stats = GRPOLoss.Stats(); behaviourGap = BehaviourGap() }
        return (stats, behaviourGap)
    }

    /// The normaliser is not used: the rollout's coefficients already average over the whole
    /// rollout batch (one micro-batch per step; every data-parallel shard carries its share).
    package func lossAndGradient(_ batch: SFTBatch, id: Int, logits: Tensor, vocab: Int, normalizer: Double) throws -> Double {
        guard let rollout = batch.rollout else {
            throw TrainError("GRPO trains on rollout batches, and this batch has no rollout (advantages and log-probabilities)")
        }
        // The KD term reads the policy's logits, which the surrogate then overwrites with its
        // gradient: it goes first, into a buffer of its own.
        var kd: (loss: Double, gradient: Tensor)?
        if kdCoefficient != 0 {
            guard let t = rollout.teacher else {
                throw TrainError("a KD term on the rollout tokens needs the teacher's distribution in the batch; pass a teacher (--reference)")
            }
            let g = Tensor(shape: [batch.targets.count, vocab])
            let weights = zip(batch.lossMask, rollout.coefficients).map { $0 * $1 }
            let loss = KDLoss.topK(student: logits.ptr, vocab: vocab, ids: t.ids, logProbs: t.logProbs, k: t.k, tailMass: t.tailMass,
                                   weights: weights, normalizer: 1, gradient: g.ptr)
            kd = (loss, g)
        }
        // The first update on a batch: its own log-probabilities are the old policy's.
        let first = oldLogProbs?.id != id
        var logProbs = [Float](repeating: 0, count: batch.targets.count)
        let (loss, s) = logProbs.withUnsafeMutableBufferPointer { lp in
            GRPOLoss.forwardBackward(logits: logits.ptr, vocab: vocab, targets: batch.targets, mask: batch.lossMask,
                                     coefficients: rollout.coefficients, advantages: rollout.advantages,
                                     oldLogProbs: first ? nil : oldLogProbs!.values, referenceLogProbs: rollout.referenceLogProbs,
                                     behaviourLogProbs: rollout.behaviourLogProbs, options: options, logProbs: lp.baseAddress!, gradient: logits.ptr)
        }
        stats.add(s)
        if first {
            for t in logProbs.indices where batch.lossMask[t] > 0 {
                behaviourGap.add(Double(abs(logProbs[t] - rollout.behaviourLogProbs[t])))
            }
            oldLogProbs = (id, logProbs)
        }
        guard let kd else { return loss }
        let scale = Float(kdCoefficient)
        for i in 0..<kd.gradient.count { logits.ptr[i] += scale * kd.gradient.ptr[i] }
        return loss + kdCoefficient * kd.loss
    }
}

/// How far the sampler's log-probabilities of rollout tokens are from the trainer's: the largest,
/// the sum, and how many tokens pass each of `thresholds`. The counts tell a policy that moved
/// every token (a stale one) from a few tokens whose activation codes rounded apart (A4, KV4).
package struct BehaviourGap: Equatable, Sendable {
    package static let thresholds = [1e-6, 1e-4, 1e-2, 1.0]
    package var max = 0.0
    package var sum = 0.0
    package var tokens = 0
    /// above[i]: the tokens whose gap exceeds thresholds[i].
    package var above = [Int](repeating: 0, count: BehaviourGap.thresholds.count)

    package init() {}

    package mutating func add(_ gap: Double) {
        max = Swift.max(max, gap)
        sum += gap
        tokens += 1
        for (i, threshold) in Self.thresholds.enumerated() where gap > threshold { above[i] += 1 }
    }
}
