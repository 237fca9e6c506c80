"""An RTSP camera for the live tests: GStreamer's RTSP server (gst-rtsp-server through
PyGObject) serving a folder of numbered JPEG frames, looped for ever, as H.264 at
rtsp://127.0.0.1:PORT/cam, one shared stream for every client as a real camera gives.

PyGObject comes from Debian (python3-gi), so this runs under the system Python, started by
``veil.testing.servers.RtspServer``; it imports nothing of Veil:

    /usr/bin/python3 rtsp_server.py --port 8554 --frames DIR --rate 10
"""

import argparse
import signal

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", required=True, help="folder of 00000.jpg, 00001.jpg, ...")
    parser.add_argument("--rate", type=int, required=True, help="frames per second")
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( multifilesrc location="{args.frames}/%05d.jpg" loop=true caps="image/jpeg,framerate={args.rate}/1" '
        f"! jpegdec ! videoconvert ! video/x-raw,format=I420 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.rate} bitrate=4000 "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    for number in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, number, loop.quit)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
