import Formats
import Model
import Quant
import Tensors
import XCTest

/// `OutlierStats`: one channel of the residual stream made 1000x larger shows as a massive
/// activation at the inputs that read the stream, and the decoder is left as it was.
final class OutlierStatsTests: XCTestCase {
    func testAMassiveChannelIsFoundAndTheDecoderIsUnchanged() throws {
        let config = ModelConfig(modelType: .qwen3, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: 40, tieWordEmbeddings: true)
        let trained = TrainableDecoder(config: config, seed: 3)
        func decoder(massiveChannel: Int?) throws -> Decoder {
            var tensors = Dictionary(uniqueKeysWithValues: trained.parameters.map { ($0.name, $0.value.copy()) })
            if let c = massiveChannel, let embedding = tensors["model.embed_tokens.weight"] {
                for row in 0..<config.vocabSize { embedding.ptr[row * config.hiddenSize + c] *= 1000 }
                tensors["model.embed_tokens.weight"] = embedding
            }
            return Decoder(weights: try DecoderWeights(config: config, source: InMemoryWeights(tensors)))
        }
        let windows = [[1, 5, 9, 13, 2, 30], [7, 7, 21, 4]]
        let plain = OutlierStats.measure(decoder: try decoder(massiveChannel: nil), windows: windows)
        let massive = try decoder(massiveChannel: 5)
        let before = massive.forward([SequenceChunk(sequence: 0, tokens: windows[0])], cache: massive.makeCache(capacities: [6])).array
        let heavy = OutlierStats.measure(decoder: massive, windows: windows)
        XCTAssertEqual(plain.count, 2 * 4, "every site of every block")
        XCTAssertTrue(plain.allSatisfy { $0.maxToMedian < OutlierStats.massiveRatio && $0.maxToMedian >= 1 }, "\(plain)")
        let qkv0 = try XCTUnwrap(heavy.first { $0.layer == 0 && $0.site == "qkv" })
        XCTAssertGreaterThan(qkv0.maxToMedian, OutlierStats.massiveRatio, "the residual stream's channel 5 stands out")
        XCTAssertGreaterThan(qkv0.kurtosis, plain.first { $0.layer == 0 && $0.site == "qkv" }!.kurtosis)
        let after = massive.forward([SequenceChunk(sequence: 0, tokens: windows[0])], cache: massive.makeCache(capacities: [6])).array
        XCTAssertEqual(after, before, "measuring leaves the decoder as it was")
    }
}
