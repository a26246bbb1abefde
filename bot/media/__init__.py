"""Where the video is cut: ffmpeg runner, probing, clip checks, song, credits and assembly.

Nothing here imports ``discord``; the front end calls these coroutines and renders results.
"""
