import Foundation
import XCTest
import TestSupport
@testable import Formats

final class ModelConfigTests: XCTestCase {
    func fixtureConfig(_ dir: String) throws -> ModelConfig {
        let url = TestPaths.fixture("\(dir)/config.json")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("\(url.path) missing: run scripts/make-reference.py --only tiny-models")
        }
        return try ModelConfig.load(url)
    }

    func write(_ json: String) throws -> URL {
        try scratchFile(self, Data(json.utf8), name: "config.json")
    }

    func testTinyQwen3Fixture() throws {
        let c = try fixtureConfig("tiny-qwen3")
        XCTAssertEqual(c.modelType, .qwen3)
        XCTAssertTrue(c.usesQKNorm)
        XCTAssertEqual(c.headDim, 32)          // explicit, not hidden / heads = 16
        XCTAssertEqual(c.hiddenSize, 64)
        XCTAssertEqual(c.numKeyValueHeads, 2)
        XCTAssertEqual(c.ropeTheta, 1e6)
        XCTAssertFalse(c.tieWordEmbeddings)
        XCTAssertFalse(c.attentionBias)
        XCTAssertNil(c.eosTokenId)
        XCTAssertEqual(c.vocabSize, 256)
    }

    func testTinyQwen2Fixture() throws {
        let c = try fixtureConfig("tiny-qwen2")
        XCTAssertEqual(c.modelType, .qwen2)
        XCTAssertFalse(c.usesQKNorm)
        XCTAssertEqual(c.headDim, 16)          // implied
        XCTAssertTrue(c.tieWordEmbeddings)
        XCTAssertTrue(c.attentionBias)         // Qwen2 always has q/k/v biases
        XCTAssertEqual(c.ropeTheta, 1e4)
        XCTAssertEqual(c.rmsNormEps, 1e-6)
    }

    func testUnknownModelTypeIsNamed() throws {
        let url = try write(#"{"model_type":"gpt_neox","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":10}"#)
        expectFormatError(try ModelConfig.load(url), contains: [url.path, "unknown model_type", "gpt_neox"])
    }

    func testBadConfigsAreNamed() throws {
        let missing = try write(#"{"model_type":"llama","hidden_size":64}"#)
        expectFormatError(try ModelConfig.load(missing), contains: [missing.path, "missing key"])
        let notJSON = try write("{oops")
        expectFormatError(try ModelConfig.load(notJSON), contains: [notJSON.path, "JSON"])
        let heads = try write(#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":3,"vocab_size":10}"#)
        expectFormatError(try ModelConfig.load(heads), contains: [heads.path, "num_key_value_heads"])
    }

    func testNestedRopeThetaAndEOSList() throws {
        let url = try write(#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":10,"rope_parameters":{"rope_theta":500000.0},"eos_token_id":[7,8]}"#)
        let c = try ModelConfig.load(url)
        XCTAssertEqual(c.ropeTheta, 500_000)
        XCTAssertEqual(c.eosTokenId, 7)
        XCTAssertEqual(c.numKeyValueHeads, 4)
    }

    func testEncodeDecodeRoundTrip() throws {
        let c = ModelConfig(modelType: .qwen3, hiddenSize: 64, intermediateSize: 128, numHiddenLayers: 2,
                            numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 32, vocabSize: 256,
                            ropeTheta: 1e6, tieWordEmbeddings: true, bosTokenId: 1, eosTokenId: 2)
        let back = try JSONDecoder().decode(ModelConfig.self, from: JSONEncoder().encode(c))
        XCTAssertEqual(back, c)
    }
}
