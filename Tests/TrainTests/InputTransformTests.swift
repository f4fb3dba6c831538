import Foundation
import Formats
import Model
import Tensors
import Train
import XCTest

/// A learnable per-channel scale of a linear layer's input, x' = x * s: the simplest input
/// transform with parameters, standing in for activation quantizers and learned rotations.
final class ChannelScale: TrainableInputTransform {
    let scale: Parameter
    init(name: String, width: Int, rng: inout SeededRNG) {
        scale = Parameter(name: name, value: Tensor(shape: [width]))
        for j in 0..<width { scale.value.ptr[j] = 1 + 0.3 * rng.normal() }
    }
    var parameters: [Parameter] { [scale] }

    func forward(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        for r in 0..<rows { for j in 0..<width { y[r * width + j] = x[r * width + j] * scale.value.ptr[j] } }
    }

    func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        for r in 0..<rows {
            for j in 0..<width {
                scale.grad.ptr[j] += dy[r * width + j] * x[r * width + j]
                dx[r * width + j] = dy[r * width + j] * scale.value.ptr[j]
            }
        }
    }
}

final class InputTransformTests: XCTestCase {
    /// Transforms at all four linear sites and at the KV-cache site of the tiny Qwen3: their
    /// parameters' gradients and the weights' and norms' gradients (which now flow through them)
    /// equal central differences, and the inference decoder's view applies them too.
    func testLearnableInputTransformsBackpropagate() throws {
        let model = BackwardTests.tinyModel(.qwen3, tied: false, seed: 5)
        let c = model.config.hiddenSize, qw = model.config.numAttentionHeads * model.config.headDim
        let widths: [LinearSite: Int] = [.qkv: c, .output: qw, .gateUp: c, .down: model.config.intermediateSize]
        var rng = SeededRNG(seed: 21)
        for (l, site) in [(0, LinearSite.qkv), (0, .output), (1, .gateUp), (1, .down)] {
            model.inputTransforms[LinearSiteKey(layer: l, site: site)] =
                ChannelScale(name: "scale.\(l).\(site)", width: widths[site]!, rng: &rng)
        }
        let kvWidth = 2 * model.config.numKeyValueHeads * model.config.headDim
        model.cacheTransforms[1] = ChannelScale(name: "kv.1", width: kvWidth, rng: &rng)
        XCTAssertEqual(model.transformParameters.count, 5)

        let batch = 2, length = 5
        let tokens = (0..<(batch * length)).map { _ in Int(rng.next() % UInt64(model.config.vocabSize)) }
        let mask = [[0, 1, 1, 1], [1, 1, 0, 1]]
        model.zeroGradients()
        for p in model.transformParameters { p.zeroGrad() }
        BackwardTests.lossAndGradients(model, tokens: tokens, batch: batch, length: length, mask: mask)
        let names = [DecoderArchitecture.name(.q, layer: 0), DecoderArchitecture.name(.inputNorm, layer: 0),
                     DecoderArchitecture.name(.o, layer: 0), DecoderArchitecture.name(.up, layer: 1),
                     DecoderArchitecture.name(.down, layer: 1), DecoderArchitecture.name(.postAttentionNorm, layer: 1)]
        let checked = model.transformParameters + names.map { model.parameter($0)! }
        var count = 0
        for p in checked {
            for i in Set([0, p.value.count / 2, p.value.count - 1]).sorted() {
                let numeric = BackwardTests.centralDifference(p.value, at: i, eps: 1e-2) {
                    BackwardTests.loss(model, tokens: tokens, batch: batch, length: length, mask: mask)
                }
                let analytic = Double(p.grad.ptr[i])
                XCTAssertLessThan(abs(numeric - analytic), 2e-4 + 1e-2 * max(abs(numeric), abs(analytic)),
                                  "\(p.name)[\(i)]: analytic \(analytic), numeric \(numeric)")
                count += 1
            }
        }
        XCTAssertEqual(count, 33)

        // The inference decoder runs the same transforms.
        let training = model.forward(tokens: Array(tokens[0..<length]), batch: 1, length: length).copy()
        let decoder = Decoder(weights: model.inferenceWeights())
        let inference = decoder.forward([SequenceChunk(sequence: 0, tokens: Array(tokens[0..<length]))],
                                        cache: decoder.makeCache(capacities: [length]), allLogits: true)
        for i in 0..<training.count { XCTAssertEqual(inference.ptr[i], training.ptr[i], accuracy: 1e-4) }
    }
}
