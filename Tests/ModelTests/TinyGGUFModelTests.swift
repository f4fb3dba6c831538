import XCTest
import Formats
import Model
import Tensors
import TestSupport

/// Random-weight Qwen3 (explicit key_length, q/k norms, untied output) and Qwen2 (q/k/v biases,
/// tied embeddings) checkpoints laid out as llama.cpp's converter writes GGUF, F16 and Q8_0,
/// against transformers loading the same files (Tests/Fixtures/tiny-gguf, made by
/// scripts/reference-gguf-qwen.py).
final class TinyGGUFModelTests: XCTestCase {
    struct Case: Decodable {
        let input_ids: [[Int]]
        let logits: [[[Float]]]
    }

    static let reference: [String: Case]? = try? TestPaths.loadJSON([String: Case].self, fixture: "tiny-gguf/logits.json")

    func open(_ file: String) throws -> Checkpoint {
        try Checkpoint.open(TestPaths.require(TestPaths.fixture("tiny-gguf/\(file)")).path)
    }

    func checkLogits(_ file: String) throws {
        let references = try XCTUnwrap(Self.reference, "Tests/Fixtures/tiny-gguf/logits.json missing: run scripts/reference-gguf-qwen.py")
        let ref = try XCTUnwrap(references[file])
        let checkpoint = try open(file)
        let model = Decoder(weights: try DecoderWeights(config: checkpoint.config, source: checkpoint.weights))
        for (ids, logits) in zip(ref.input_ids, ref.logits) {
            let cache = model.makeCache(capacities: [ids.count])
            let ours = model.forward([SequenceChunk(sequence: 0, tokens: ids)], cache: cache, allLogits: true)
            XCTAssertEqual(ours.shape, [ids.count, checkpoint.config.vocabSize])
            var diff = 0.0, norm = 0.0
            for (t, row) in logits.enumerated() {
                for (j, r) in row.enumerated() {
                    let d = Double(ours[t, j]) - Double(r)
                    diff += d * d
                    norm += Double(r) * Double(r)
                }
            }
            let err = (diff / norm).squareRoot()
            XCTAssertLessThan(err, 1e-3, "\(file): logits differ from transformers by \(err) relative")
        }
    }

    func testQwen3F16LogitsMatchTransformers() throws { try checkLogits("qwen3-f16.gguf") }
    func testQwen3Q8_0LogitsMatchTransformers() throws { try checkLogits("qwen3-q8_0.gguf") }
    func testQwen2F16LogitsMatchTransformers() throws { try checkLogits("qwen2-f16.gguf") }
    func testQwen2Q8_0LogitsMatchTransformers() throws { try checkLogits("qwen2-q8_0.gguf") }

    /// The config comes from the `<arch>.*` metadata: Qwen3's head width from key_length (not
    /// hidden / heads), its untied head from output.weight; Qwen2's biases from attn_q.bias.
    func testConfigFromMetadata() throws {
        let qwen3 = try open("qwen3-q8_0.gguf").config
        XCTAssertEqual(qwen3.modelType, .qwen3)
        XCTAssertEqual(qwen3.headDim, 128)
        XCTAssertEqual(qwen3.numAttentionHeads, 2)
        XCTAssertEqual(qwen3.numKeyValueHeads, 1)
        XCTAssertFalse(qwen3.tieWordEmbeddings)
        XCTAssertFalse(qwen3.attentionBias)
        XCTAssertTrue(qwen3.usesQKNorm)
        XCTAssertEqual(qwen3.ropeTheta, 1e6)
        XCTAssertEqual(qwen3.vocabSize, 256)

        let qwen2 = try open("qwen2-f16.gguf")
        XCTAssertEqual(qwen2.config.modelType, .qwen2)
        XCTAssertEqual(qwen2.config.headDim, 16)
        XCTAssertTrue(qwen2.config.tieWordEmbeddings)
        XCTAssertTrue(qwen2.config.attentionBias)
        XCTAssertFalse(qwen2.config.usesQKNorm)
        XCTAssertEqual(qwen2.config.ropeTheta, 1e4)
        XCTAssertEqual(qwen2.weights.storageType(DecoderArchitecture.name(.qBias, layer: 1)), "F32")
        XCTAssertEqual(qwen2.weights.storageType(DecoderArchitecture.name(.q, layer: 1)), "F16")
    }
}
