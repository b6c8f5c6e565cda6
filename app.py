"""voiceface Gradio app (placeholder page until the app issue lands)."""

import gradio as gr

with gr.Blocks(title="voiceface") as demo:
    gr.Markdown("# voiceface\nVoice to face: the app is being built.")

if __name__ == "__main__":
    demo.launch()
