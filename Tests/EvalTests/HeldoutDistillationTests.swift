import Eval
import Formats
import Foundation
import Model
import Tensors
import Train
import XCTest

/// `HeldoutDistillation`: the held-out forward KL of a student to a teacher.
final class DistillationTests: XCTestCase {
    /// Weights held in memory, served under their Hugging Face names.
    struct MemoryWeights: WeightSource {
        let tensors: [String: Tensor]
        var path: String { "memory" }
        var names: [String] { Array(tensors.keys) }
        func has(_ name: String) -> Bool { tensors[name] != nil }
        func tensor(_ name: String) throws -> Tensor {
            guard let t = tensors[name] else { throw FormatError(path, "missing \(name)") }
            return t
        }
        func storageType(_ name: String) -> String? { has(name) ? "F32" : nil }
    }

    let config = ModelConfig(modelType: .qwen3, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                             numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: 61,
                             rmsNormEps: 1e-6, ropeTheta: 10_000, maxPositionEmbeddings: 64, tieWordEmbeddings: true)

    /// A random model as a trainable decoder (student) and as an inference decoder (teacher).
    func models(seed: UInt64) throws -> (TrainableDecoder, Decoder) {
        let student = TrainableDecoder(config: config, seed: seed)
        // Larger weights than the default init, so the distributions are far from uniform.
        for p in student.parameters where p.value.rank == 2 { for i in 0..<p.value.count { p.value.ptr[i] *= 8 } }
        let source = MemoryWeights(tensors: Dictionary(uniqueKeysWithValues: student.parameters.map { ($0.name, $0.value) }))
        return (student, Decoder(weights: try DecoderWeights(config: config, source: source)))
    }

    func examples() -> [SFTExample] {
        var rng = SeededRNG(seed: 5)
        return [(9, 4), (14, 6), (5, 1), (11, 11), (7, 2)].enumerated().map { i, shape in
            SFTExample(tokens: (0..<shape.0).map { _ in Int(rng.next() % 61) }, promptLength: shape.1, line: i + 1)
        }
    }

    func testCompletionPositionsMatchTheBatchersLossMask() throws {
        XCTAssertEqual(HeldoutDistillation.completionPositions(SFTExample(tokens: [1, 2, 3, 4, 5, 6], promptLength: 3, line: 1)), [2, 3, 4])
        XCTAssertEqual(HeldoutDistillation.completionPositions(SFTExample(tokens: [1, 2, 3], promptLength: 0, line: 1)), [0, 1])
        XCTAssertEqual(HeldoutDistillation.completionPositions(SFTExample(tokens: [1, 2, 3], promptLength: 3, line: 1)), [])
        // The same positions the SFT batcher trains on (one padded example per row).
        for example in examples() {
            let batcher = try SFTBatcher(dataset: SFTDataset(path: "x", examples: [example]), seqLen: 16, batchTokens: 16,
                                         packing: false, padId: 0, seed: 0)
            let mask = batcher.nextBatch().lossMask
            XCTAssertEqual(mask.indices.filter { mask[$0] > 0 }, HeldoutDistillation.completionPositions(example))
        }
    }

    func testSameWeightsGiveZeroKL() throws {
        let (student, teacher) = try models(seed: 1)
        let probe = HeldoutDistillation(teacher: teacher, examples: examples())
        let kl = probe.evaluate(student: student)
        XCTAssertEqual(kl.positions, 5 + 8 + 4 + 0 + 5)
        XCTAssertEqual(kl.counts, [5, 8, 4, 0, 5])
        XCTAssertLessThan(abs(kl.mean), 1e-5)
    }

    /// Against a brute-force KL in Double from each example's own student forward, for two
    /// temperatures and two batch shapes (padding and batching must not change anything).
    func testMatchesBruteForce() throws {
        let (_, teacher) = try models(seed: 1)
        let (student, _) = try models(seed: 2)
        let data = examples()
        for temperature: Float in [1, 2] {
            let probe = HeldoutDistillation(teacher: teacher, examples: data, temperature: temperature)
            var expected = [Double](repeating: 0, count: data.count)
            for (e, example) in data.enumerated() {
                let cache = teacher.makeCache(capacities: [example.tokens.count])
                let t = teacher.forward([SequenceChunk(sequence: 0, tokens: example.tokens)], cache: cache, allLogits: true)
                let s = student.forward(tokens: example.tokens, batch: 1, length: example.tokens.count)
                for p in HeldoutDistillation.completionPositions(example) {
                    let lp = logSoftmax(t.row(p), temperature), lq = logSoftmax(s.row(p), temperature)
                    for j in 0..<config.vocabSize { expected[e] += exp(lp[j]) * (lp[j] - lq[j]) }
                }
            }
            for (rows, seqLen) in [(1, nil), (2, 20), (3, 16)] as [(Int, Int?)] {
                let kl = probe.evaluate(student: student, rows: rows, seqLen: seqLen, padId: 3)
                for e in data.indices {
                    XCTAssertEqual(kl.sums[e], expected[e], accuracy: 1e-4 * max(1, expected[e]), "T \(temperature), rows \(rows), example \(e)")
                }
                XCTAssertGreaterThan(kl.mean, 0.05)
            }
        }
    }

    func logSoftmax(_ x: UnsafeMutablePointer<Float>, _ temperature: Float) -> [Double] {
        let z = (0..<config.vocabSize).map { Double(x[$0]) / Double(temperature) }
        let m = z.max()!
        let logZ = m + log(z.reduce(0) { $0 + exp($1 - m) })
        return z.map { $0 - logZ }
    }

    func testDifferenceAndClusteredStandardError() {
        let a = HeldoutKL(sums: [2, 4, 6], counts: [2, 2, 2])
        let b = HeldoutKL(sums: [1, 3, 5], counts: [2, 2, 2])
        XCTAssertEqual(a.mean, 2, accuracy: 1e-12)
        let d = a.difference(from: b)
        XCTAssertEqual(d.mean, 0.5, accuracy: 1e-12)
        XCTAssertEqual(d.standardError, 0, accuracy: 1e-12)   // every example differs by the same amount
        let c = HeldoutKL(sums: [1, 4, 4], counts: [2, 2, 2])
        // d_e = (1, 0, 2), mean per position 0.5; residuals d_e - 2 * 0.5 = (0, -1, 1): SE = sqrt(2 * 3/2) / 6.
        XCTAssertEqual(a.difference(from: c).standardError, 3.0.squareRoot() / 6, accuracy: 1e-12)
    }
}
