import Quant
import Formats
import Model
import XCTest

final class QuantSchemeTests: XCTestCase {
    func testParsesTheFieldsNotation() throws {
        XCTAssertEqual(try QuantScheme.parse("w3g128"), QuantScheme(weightBits: 3, groupSize: 128, symmetric: false))
        XCTAssertEqual(try QuantScheme.parse("W4G128-sym"), QuantScheme(weightBits: 4, groupSize: 128, symmetric: true))
        XCTAssertEqual(try QuantScheme.parse("w4"), QuantScheme(weightBits: 4))
        XCTAssertEqual(try QuantScheme.parse("w8-asym"), QuantScheme(weightBits: 8))
        XCTAssertEqual(try QuantScheme.parse("w2g64"), QuantScheme(weightBits: 2, groupSize: 64))
        XCTAssertEqual(try QuantScheme.parse("w4a4kv4"), QuantScheme(weightBits: 4, activationBits: 4, kvBits: 4))
        XCTAssertEqual(try QuantScheme.parse("w4-a8-kv8-sym"), QuantScheme(weightBits: 4, symmetric: true, activationBits: 8, kvBits: 8))
        XCTAssertEqual(try QuantScheme.parse("a8"), QuantScheme(weightBits: nil, activationBits: 8))
        // The description parses back to the same scheme.
        for text in ["w3g128", "w4g128-sym", "w4", "w4a4kv4", "a8kv4"] {
            let s = try QuantScheme.parse(text)
            XCTAssertEqual(try QuantScheme.parse(s.description), s, text)
        }
    }

    func testRejectsUnsupportedAndListsValidForms() {
        for bad in ["w5g128", "w3g100", "w4a2", "kv3", "", "int4", "w4g", "w4w4", "sym", "w3g128-sym-asym"] {
            XCTAssertThrowsError(try QuantScheme.parse(bad), bad) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains("Valid:") && message.contains("w3g128"), message)
            }
        }
    }

    /// Activation and KV-cache widths parse, but nothing applies them yet: every job refuses
    /// such a scheme, naming the missing part, instead of running it as weight-only.
    func testSchemesWithUnimplementedPartsAreRefusedByName() throws {
        XCTAssertEqual(try QuantScheme.parse("w4a4kv4").unimplementedParts, ["a4", "kv4"])
        XCTAssertEqual(try QuantScheme.parse("w3g128").unimplementedParts, [])
        XCTAssertNoThrow(try QuantScheme.parse("w4g128-sym").requireImplemented(for: "ptq"))
        XCTAssertThrowsError(try QuantScheme.parse("w4a8").requireImplemented(for: "ptq")) { error in
            XCTAssertTrue("\(error)".contains("activation quantization (a8) is not implemented"), "\(error)")
        }
        let config = ModelConfig(modelType: .qwen3, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 1,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: 40, tieWordEmbeddings: true)
        let decoder = TrainableDecoder(config: config, seed: 1)
        XCTAssertThrowsError(try FakeQuantizer(decoder: decoder, scheme: try QuantScheme.parse("w4a4kv4"), mode: .ste)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("activation quantization (a4)") && message.contains("KV-cache quantization (kv4)"), message)
        }
        let inference = Decoder(weights: try DecoderWeights(config: config, source: InMemoryWeights(Dictionary(uniqueKeysWithValues: decoder.parameters.map { ($0.name, $0.value) }))))
        XCTAssertThrowsError(try PTQ.quantize(decoder: inference, calibration: [], options: PTQOptions(scheme: try QuantScheme.parse("w4a8"), method: .rtn))) { error in
            XCTAssertTrue("\(error)".contains("(a8)"), "\(error)")
        }
    }
}
