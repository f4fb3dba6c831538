import Cluster
import Formats
import Foundation
import Model
import Quant
import Tensors
import XCTest

/// The policy a serving rank samples from, through the wire: every field survives the trip,
/// and with fp32 for the unquantized tensors the serving decoder's logits are the student's
/// fake-quant forward's, bit for bit (the on-policy premise of RL rollouts on other ranks).
final class PolicySyncTests: XCTestCase {
    func makeStudent(scheme: QuantScheme) throws -> (TrainableDecoder, FakeQuantizer) {
        let config = ModelConfig(modelType: .qwen3, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: 50,
                                 maxPositionEmbeddings: 64, tieWordEmbeddings: true)
        let decoder = TrainableDecoder(config: config, seed: 9)
        // A grid as a PTQ init or QAT checkpoint carries it (fp16 scales, integer zeros), which
        // the packed form holds exactly.
        let first = try FakeQuantizer(decoder: decoder, scheme: scheme, mode: .ste)
        let grids = first.exportQuantized().mapValues(FakeQuantizer.InitialGrid.init)
        let quantizer = try FakeQuantizer(decoder: decoder, scheme: scheme, mode: .ste, initialGrids: grids)
        decoder.weightQuantizer = quantizer
        return (decoder, quantizer)
    }

    func snapshot(_ decoder: TrainableDecoder, _ quantizer: FakeQuantizer, version: Int) -> PolicySnapshot {
        let quantized = quantizer.exportQuantized()
        var full: [String: Tensor] = [:]
        for p in decoder.parameters where quantized[p.name] == nil { full[p.name] = p.value }
        return PolicySnapshot(version: version, quantized: quantized, fullPrecision: full)
    }

    func logits(_ decoder: Decoder, _ tokens: [Int]) -> [Float] {
        let cache = decoder.makeCache(capacities: [tokens.count])
        return decoder.forward([SequenceChunk(sequence: 0, tokens: tokens)], cache: cache).array
    }

    func testThePolicyCrossesTheWireExactly() throws {
        let scheme = try QuantScheme.parse("w3g16")
        let (student, quantizer) = try makeStudent(scheme: scheme)
        let sent = snapshot(student, quantizer, version: 7)
        let bytes = TensorFrame.encodeMessage(PolicySync.frames(sent), codec: .shuffledZstd(level: 3))
        let received = try PolicySync.snapshot(from: try TensorFrame.decodeMessage(bytes, from: 0), scheme: scheme, rank: 0)
        XCTAssertEqual(received, sent)

        let served = Decoder(weights: try received.decoderWeights(config: student.config))
        let own = Decoder(weights: student.inferenceWeights())
        let tokens = [3, 17, 5, 42, 8, 1]
        XCTAssertEqual(logits(served, tokens), logits(own, tokens), "the serving decoder is the student's fake-quant policy")
    }

    func testBFloat16TensorsAreSmallerAndClose() throws {
        let scheme = try QuantScheme.parse("w4g16")
        let (student, quantizer) = try makeStudent(scheme: scheme)
        let sent = snapshot(student, quantizer, version: 1)
        let name = "model.embed_tokens.weight"
        let exact = PolicySync.frames(sent), small = PolicySync.frames(sent, bfloat16: [name])
        XCTAssertLessThan(TensorFrame.encodedSize(small, codec: .raw), TensorFrame.encodedSize(exact, codec: .raw))
        let received = try PolicySync.snapshot(from: small, scheme: scheme, rank: 0)
        let a = try XCTUnwrap(received.fullPrecision[name]).array, b = try XCTUnwrap(sent.fullPrecision[name]).array
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: abs(y) / 128 + 1e-30) }
        XCTAssertEqual(received.quantized, sent.quantized)
    }

    func testAMessageForAnotherSchemeIsRefused() throws {
        let (student, quantizer) = try makeStudent(scheme: try QuantScheme.parse("w3g16"))
        let frames = PolicySync.frames(snapshot(student, quantizer, version: 1))
        XCTAssertThrowsError(try PolicySync.snapshot(from: frames, scheme: try QuantScheme.parse("w4g16"), rank: 2)) { error in
            XCTAssertTrue("\(error)".contains("rank 2") && "\(error)".contains("4 bits"), "\(error)")
        }
    }
}
