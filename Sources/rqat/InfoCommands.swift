import ArgumentParser
import Foundation
import Jobs
import Formats
import Quant

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a checkpoint's architecture, parameter count and tensor dtypes.")

    @Argument(help: "A .gguf file or a Hugging Face model directory.")
    var path: String

    func run() throws {
        try reportingErrors {
            let checkpoint = try Checkpoint.open(path)
            try checkpoint.validateShapes()
            let c = checkpoint.config
            print("path:            \(path) (\(checkpoint.kind))")
            print("architecture:    \(c.modelType.rawValue)")
            print("layers:          \(c.numHiddenLayers)")
            print("hidden:          \(c.hiddenSize)   mlp: \(c.intermediateSize)")
            print("heads:           \(c.numAttentionHeads) (kv \(c.numKeyValueHeads), head_dim \(c.headDim))")
            print("vocab:           \(c.vocabSize)   tied embeddings: \(c.tieWordEmbeddings)")
            print("rope theta:      \(c.ropeTheta)   rms eps: \(c.rmsNormEps)   context: \(c.maxPositionEmbeddings)")
            print("parameters:      \(c.parameterCount) (\(String(format: "%.1f", Double(c.parameterCount) / 1e6))M)")
            var byType: [String: (count: Int, elements: Int)] = [:]
            for name in checkpoint.weights.names {
                let dtype = checkpoint.weights.storageType(name) ?? "?"
                byType[dtype, default: (0, 0)].count += 1
                byType[dtype, default: (0, 0)].elements += checkpoint.weights.shape(name)?.reduce(1, *) ?? 0
            }
            for (dtype, v) in byType.sorted(by: { $0.key < $1.key }) {
                print("tensors \(dtype.padding(toLength: 8, withPad: " ", startingAt: 0)) \(v.count) tensors, \(v.elements) values")
            }
        }
    }
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the token ids of a text as a JSON array.")

    @Option(help: "A .gguf file or a Hugging Face model directory (its tokenizer is used).")
    var model: String
    @Option(help: "The text to tokenize.")
    var text: String
    @Flag(help: "Wrap the text as a user message in the model's chat template first.")
    var chat = false

    func run() throws {
        try reportingErrors {
            let checkpoint = try Checkpoint.open(model)
            let (tokenizer, template) = try checkpoint.loadTokenizer()
            let rendered = template.prompt(text, chat: chat)
            let ids = tokenizer.encode(rendered)
            print("[" + ids.map(String.init).joined(separator: ",") + "]")
        }
    }
}
