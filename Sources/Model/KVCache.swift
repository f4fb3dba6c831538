import Formats
import Tensors

/// Keys and values of every past token, per sequence and layer.
///
/// Layout of one (sequence, layer): keys (KV, capacity, D) then values (KV, capacity, D), so
/// the keys of one head are contiguous rows and attention streams through them.
package final class KVCache {
    package let layers: Int
    package let kvHeads: Int
    package let headDim: Int
    package private(set) var capacity: [Int]
    /// Tokens stored so far per sequence (the position of the next token).
    package private(set) var length: [Int]
    private var storage: [[Tensor]]     // [sequence][layer]: (2, KV, capacity, D)

    /// `layers` defaults to the model's; layer-by-layer calibration needs only one.
    package init(config: ModelConfig, capacities: [Int], layers: Int? = nil) {
        let layerCount = layers ?? config.numHiddenLayers
        self.layers = layerCount
        kvHeads = config.numKeyValueHeads
        headDim = config.headDim
        capacity = capacities
        length = Array(repeating: 0, count: capacities.count)
        storage = capacities.map { cap in
            (0..<layerCount).map { _ in Tensor(shape: [2, config.numKeyValueHeads, cap, config.headDim]) }
        }
    }

    package var sequences: Int { length.count }

    /// Bytes held by the cache.
    package var bytes: Int { storage.reduce(0) { $0 + $1.reduce(0) { $0 + $1.count * 4 } } }

    @inline(__always)
    func keys(sequence s: Int, layer l: Int, head h: Int) -> UnsafeMutablePointer<Float> {
        storage[s][l].ptr + (h * capacity[s]) * headDim
    }

    @inline(__always)
    func values(sequence s: Int, layer l: Int, head h: Int) -> UnsafeMutablePointer<Float> {
        storage[s][l].ptr + ((kvHeads + h) * capacity[s]) * headDim
    }

    /// Marks `n` more tokens of sequence `s` as stored (after every layer has written them).
    func advance(sequence s: Int, by n: Int) { length[s] += n }

    /// Forgets everything of sequence `s` (reuse its memory for a new prompt).
    package func reset(sequence s: Int) { length[s] = 0 }

    /// Sequence `s` starts over as a copy of the first `count` tokens of `source`'s sequence
    /// `from` (a prompt prefix prefilled once for many sequences).
    func startAsCopy(sequence s: Int, of source: KVCache, sequence from: Int, count: Int) {
        precondition(source.layers == layers && source.kvHeads == kvHeads && source.headDim == headDim,
                     "caches of different models")
        precondition(count <= source.length[from] && count <= capacity[s], "prefix of \(count) tokens does not fit")
        for l in 0..<layers {
            for h in 0..<kvHeads {
                keys(sequence: s, layer: l, head: h).update(from: source.keys(sequence: from, layer: l, head: h), count: count * headDim)
                values(sequence: s, layer: l, head: h).update(from: source.values(sequence: from, layer: l, head: h), count: count * headDim)
            }
        }
        length[s] = count
    }
}
