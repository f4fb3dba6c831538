import Foundation

/// Measures this machine's memory bandwidth with all threads, the ceiling for any kernel that
/// streams weights (decode reads every weight once per step).
public enum MemoryBandwidth {
    /// Bytes per second: `copy` counts bytes read plus bytes written (as STREAM does);
    /// `read` counts bytes summed. The best of `repeats` runs.
    public static func measure(bytes: Int, repeats: Int) -> (copy: Double, read: Double) {
        let n = bytes / 4
        let src = Tensor(shape: [n]), dst = Tensor(shape: [n])
        for i in stride(from: 0, to: n, by: 1024) { src.ptr[i] = Float(i) }
        var bestCopy = Double.infinity, bestRead = Double.infinity
        var sink: Float = 0
        for _ in 0..<repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds
            Threads.parallelFor(Threads.count) { parts in
                for p in parts {
                    let lo = n * p / Threads.count, hi = n * (p + 1) / Threads.count
                    (dst.ptr + lo).update(from: src.ptr + lo, count: hi - lo)
                }
            }
            let t1 = DispatchTime.now().uptimeNanoseconds
            let sums = UnsafeMutablePointer<Float>.allocate(capacity: Threads.count)
            Threads.parallelFor(Threads.count) { parts in
                for p in parts {
                    let lo = n * p / Threads.count, hi = n * (p + 1) / Threads.count
                    var acc = SIMD16<Float>()
                    var i = lo
                    let base = UnsafeRawPointer(src.ptr)
                    while i + 16 <= hi {
                        acc += base.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
                        i += 16
                    }
                    sums[p] = acc.sum()
                }
            }
            let t2 = DispatchTime.now().uptimeNanoseconds
            for p in 0..<Threads.count { sink += sums[p] }
            sums.deallocate()
            bestCopy = min(bestCopy, Double(t1 - t0))
            bestRead = min(bestRead, Double(t2 - t1))
        }
        if sink.isNaN { print("") }  // keeps the read loop from being optimised away
        return (2 * Double(n * 4) / (bestCopy / 1e9), Double(n * 4) / (bestRead / 1e9))
    }
}
