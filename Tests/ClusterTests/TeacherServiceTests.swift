import Cluster
import Formats
import Model
import Quant
import Tensors
import Train
import XCTest

/// The teacher side without MPI: signal encodings against brute force, the request/response
/// wire round trip, and what a student does with a bad or foreign response.
final class TeacherServiceTests: XCTestCase {
    let config = ModelConfig(modelType: .qwen3, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                             numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: 300,
                             rmsNormEps: 1e-6, ropeTheta: 10_000, maxPositionEmbeddings: 64, tieWordEmbeddings: true)

    func tinyTeacher(_ options: SignalOptions) throws -> TeacherService {
        let trainable = TrainableDecoder(config: config, seed: 3)
        let weights = InMemoryWeights(Dictionary(uniqueKeysWithValues: trainable.parameters.map { ($0.name, $0.value) }))
        return TeacherService(decoder: Decoder(weights: try DecoderWeights(config: config, source: weights)), options: options,
                              stopTokens: [2])
    }

    func batch(rows: Int = 3, seqLen: Int = 12) -> SFTBatch {
        var rng = SeededRNG(seed: 5)
        let tokens = (0..<rows * seqLen).map { _ in Int(rng.next() % 300) }
        let mask = (0..<rows * seqLen).map { $0 % seqLen >= 4 && $0 % seqLen < seqLen - 1 ? Float(1) : 0 }
        return SFTBatch(rows: rows, seqLen: seqLen, tokens: tokens, targets: tokens, lossMask: mask,
                        documentStarts: Array(repeating: [0], count: rows), exampleCount: rows)
    }

    func testTopKIsTheLargestLogitsWithTheirLogProbsAndTail() {
        var rng = SeededRNG(seed: 9)
        let v = 50, rows = 4, k = 5
        let logits = (0..<rows * v).map { _ in rng.normal() * 3 }
        let signal = TeacherSignal.make(logits: logits, rows: rows, vocab: v, encoding: .topK(k), temperature: 2) { _ in 0 }
        guard case .topK(_, let ids, let logProbs, let tail) = signal else { return XCTFail("not top-k") }
        for r in 0..<rows {
            let row = Array(logits[r * v..<(r + 1) * v])
            let expected = row.indices.sorted { row[$0] > row[$1] }.prefix(k)
            XCTAssertEqual(ids[r * k..<(r + 1) * k].map(Int.init), Array(expected))
            let z = row.map { Double($0) / 2 }, m = z.max()!
            let logZ = m + log(z.reduce(0) { $0 + exp($1 - m) })
            var kept = 0.0
            for (slot, id) in expected.enumerated() {
                XCTAssertEqual(Double(logProbs[r * k + slot]), z[id] - logZ, accuracy: 1e-5)
                kept += exp(z[id] - logZ)
            }
            XCTAssertEqual(Double(tail[r]), 1 - kept, accuracy: 1e-5)
        }
    }

    func testSampledDrawsFollowTheDistributionAndTheSeed() {
        let v = 4, m = 200
        let logits: [Float] = [log(0.5), log(0.25), log(0.125), log(0.125)]
        let a = TeacherSignal.make(logits: logits, rows: 1, vocab: v, encoding: .sampled(m), temperature: 1) { _ in 42 }
        let b = TeacherSignal.make(logits: logits, rows: 1, vocab: v, encoding: .sampled(m), temperature: 1) { _ in 42 }
        let c = TeacherSignal.make(logits: logits, rows: 1, vocab: v, encoding: .sampled(m), temperature: 1) { _ in 43 }
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, c)
        guard case .sampled(_, let ids, let counts) = a else { return XCTFail("not sampled") }
        var frequency = [Double](repeating: 0, count: v)
        for (id, count) in zip(ids, counts) { frequency[Int(id)] += Double(count) / Double(m) }
        XCTAssertEqual(counts.reduce(0) { $0 + Int($1) }, m)
        for (f, p) in zip(frequency, [0.5, 0.25, 0.125, 0.125]) { XCTAssertEqual(f, p, accuracy: 0.1) }
    }

    /// The local link goes through the same bytes as MPI; its signal equals the teacher's own.
    func testLocalLinkRoundTripEqualsDirectSignal() throws {
        for encoding in [SignalEncoding.full, .topK(16), .sampled(8)] {
            var options = SignalOptions()
            options.encoding = encoding
            let service = try tinyTeacher(options)
            let link = LocalTeacherLink(service: service)
            let request = SignalRequest(batchId: 7, batch: batch())
            try link.submit(request)
            let received = try link.signal(batchId: 7, rows: request.positions.count)
            let direct = service.signal(for: request)
            switch (received, direct) {
            case (.topK(let k, let ids, let lp, let tail), .topK(_, let ids2, let lp2, let tail2)):
                XCTAssertEqual(ids, ids2)
                XCTAssertEqual(tail, tail2)
                // fp16 on the wire: within half-precision rounding of the log-probabilities.
                for (x, y) in zip(lp, lp2) { XCTAssertEqual(x, y, accuracy: max(abs(y) * 1e-3, 1e-3)) }
                XCTAssertEqual(k, 16)
            default:
                XCTAssertEqual(received, direct, "\(encoding)")
            }
            XCTAssertGreaterThan(link.bytesReceived, 0)
        }
    }

    func testCorruptOrForeignResponsesNameTheTeacherRank() throws {
        var options = SignalOptions()
        options.encoding = .topK(8)
        let service = try tinyTeacher(options)
        let request = SignalRequest(batchId: 1, batch: batch())
        let requestBytes = TensorFrame.encodeMessage(request.frames(vocab: 300), codec: options.codec)
        var response = try service.respond(toSignalRequest: requestBytes, from: 3)
        // A flipped byte in the payload: the checksum catches it.
        response[response.count - 5] ^= 0x40
        XCTAssertThrowsError(try TensorFrame.decodeMessage(response, from: 0)) { error in
            XCTAssertTrue("\(error)".contains("rank 0"), "\(error)")
        }
        // A teacher with a larger vocabulary than the student: ids out of range are refused.
        let good = try service.respond(toSignalRequest: requestBytes, from: 3)
        XCTAssertThrowsError(try TeacherSignal(frames: try TensorFrame.decodeMessage(good, from: 0), batchId: 1,
                                               rows: request.positions.count, vocab: 10, encoding: .topK(8), from: 0)) { error in
            XCTAssertTrue("\(error)".contains("vocabularies differ"), "\(error)")
        }
        // An answer to another batch.
        XCTAssertThrowsError(try TeacherSignal(frames: try TensorFrame.decodeMessage(good, from: 0), batchId: 2,
                                               rows: request.positions.count, vocab: 300, encoding: .topK(8), from: 0))
    }

    func testGenerationRequestsRoundTripToTheSameCompletions() throws {
        let service = try tinyTeacher(SignalOptions())
        let requests = (0..<3).map { i in
            GenerationRequest(prompt: [5 + i, 17, 40], maxNewTokens: 6,
                              sampling: SamplingParams(temperature: 0.8, topP: 0.9, topK: 0, seed: 100 + UInt64(i) << 33))
        }
        let direct = Generator(decoder: service.decoder, stopTokens: service.stopTokens).generate(requests)
        let received = try generateLocally(requests, service: service)
        XCTAssertEqual(received.map(\.tokens), direct.map(\.tokens))
        XCTAssertEqual(received.map(\.logprobs), direct.map(\.logprobs))
        XCTAssertEqual(received.map(\.finish), direct.map(\.finish))
    }
}
