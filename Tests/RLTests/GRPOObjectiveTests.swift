import Foundation
import RL
import Tensors
import Train
import XCTest

/// The objective's KD term on rollout tokens: its gradient is the surrogate's plus kdCoefficient
/// times forward KL's (each checked against PyTorch on its own: GRPOLossReferenceTests,
/// KDReferenceTests), with the surrogate's coefficients as the KD weights.
final class GRPOObjectiveTests: XCTestCase {
    func testKDTermAddsTheWeightedDistillationGradient() throws {
        let rows = 2, seqLen = 5, v = 16, n = rows * seqLen, k = 8
        var rng = SeededRNG(seed: 31)
        func normal() -> Float { Float((rng.uniform() - 0.5) * 4) }
        let tokens = (0..<n).map { _ in Int(rng.next() % UInt64(v)) }
        var targets = tokens, mask = [Float](repeating: 0, count: n)
        for t in 0..<n { targets[t] = t % seqLen == seqLen - 1 ? 0 : tokens[t + 1]; mask[t] = t % seqLen >= 1 && t % seqLen < 4 ? 1 : 0 }
        let logits = (0..<n * v).map { _ in normal() }, teacherLogits = (0..<n * v).map { _ in normal() }
        guard case .topK(_, let ids, let lp, let tail) = teacherLogits.withUnsafeBufferPointer({
            TeacherSignal.make(logits: $0.baseAddress!, rows: n, vocab: v, encoding: .topK(k), temperature: 1, seed: { _ in 0 })
        }) else { return XCTFail("top-k signal expected") }
        let coefficients = mask.map { $0 / 6 }
        var batch = SFTBatch(rows: rows, seqLen: seqLen, tokens: tokens, targets: targets, lossMask: mask,
                             documentStarts: [[0], [0]], exampleCount: rows)
        batch.rollout = RolloutTokens(advantages: (0..<n).map { $0 < seqLen ? 1 : -1 }, coefficients: coefficients,
                                      behaviourLogProbs: [Float](repeating: -2, count: n), teacher: (k, ids, lp, tail))

        func gradient(kd: Double) throws -> (loss: Double, gradient: [Float]) {
            let t = Tensor(shape: [n, v])
            for i in 0..<n * v { t.ptr[i] = logits[i] }
            let objective = GRPOObjective(options: GRPOLoss.Options(), kdCoefficient: kd)
            let loss = try objective.lossAndGradient(batch, id: 0, logits: t, vocab: v, normalizer: 1)
            return (loss, t.array)
        }
        let lambda = 0.3
        let surrogate = try gradient(kd: 0), mixed = try gradient(kd: lambda)
        var kdGradient = [Float](repeating: 0, count: n * v)
        let kdLoss = logits.withUnsafeBufferPointer { z in
            kdGradient.withUnsafeMutableBufferPointer { g in
                KDLoss.topK(student: z.baseAddress!, vocab: v, ids: ids, logProbs: lp, k: k, tailMass: tail,
                            weights: coefficients, normalizer: 1, gradient: g.baseAddress!)
            }
        }
        XCTAssertGreaterThan(kdLoss, 0)
        XCTAssertEqual(mixed.loss, surrogate.loss + lambda * kdLoss, accuracy: 1e-9)
        for i in 0..<n * v {
            XCTAssertEqual(mixed.gradient[i], surrogate.gradient[i] + Float(lambda) * kdGradient[i], accuracy: 1e-6, "entry \(i)")
        }
        XCTAssertTrue(kdGradient.contains { $0 != 0 })
    }

    func testKDTermWithoutATeacherIsRefused() throws {
        var batch = SFTBatch(rows: 1, seqLen: 2, tokens: [1, 2], targets: [2, 0], lossMask: [1, 0], documentStarts: [[0]], exampleCount: 1)
        batch.rollout = RolloutTokens(advantages: [1, 0], coefficients: [1, 0], behaviourLogProbs: [0, 0])
        let t = Tensor(shape: [2, 4])
        XCTAssertThrowsError(try GRPOObjective(options: GRPOLoss.Options(), kdCoefficient: 0.1)
            .lossAndGradient(batch, id: 0, logits: t, vocab: 4, normalizer: 1)) { error in
            XCTAssertTrue("\(error)".contains("--reference"), "\(error)")
        }
    }
}
